import Foundation

/// Errors reading a safetensors file.
public enum SafeTensorsError: Error, CustomStringConvertible {
  case truncated(path: String)
  case badHeader(path: String, reason: String)
  case missingTensor(path: String, name: String)
  case shapeMismatch(path: String, name: String, expected: [Int], found: [Int])

  public var description: String {
    switch self {
    case .truncated(let p): return "\(p): file is truncated"
    case .badHeader(let p, let r): return "\(p): invalid safetensors header: \(r)"
    case .missingTensor(let p, let n): return "\(p): tensor \(n) is missing"
    case .shapeMismatch(let p, let n, let e, let f): return "\(p): tensor \(n) has shape \(f), expected \(e)"
    }
  }
}

/// The safetensors format (8-byte little-endian header length, JSON header, raw little-endian
/// data), float32 tensors only. PyTorch reads these files with `safetensors.torch.load_file`.
public enum SafeTensors {
  /// A named float32 tensor.
  public struct Tensor {
    public var shape: [Int]
    public var values: [Float]
    public init(shape: [Int], values: [Float]) { self.shape = shape; self.values = values }
  }

  /// Encodes tensors (in the given order) and string metadata.
  public static func encode(_ tensors: [(String, Tensor)], metadata: [String: String] = [:]) throws -> Data {
    var header: [String: Any] = [:]
    if !metadata.isEmpty { header["__metadata__"] = metadata }
    var offset = 0
    for (name, t) in tensors {
      let bytes = t.values.count * 4
      header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]]
      offset += bytes
    }
    var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    while json.count % 8 != 0 { json.append(0x20) }  // pad with spaces so data is 8-byte aligned
    var out = Data(capacity: 8 + json.count + offset)
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    out.append(json)
    for (_, t) in tensors { t.values.withUnsafeBytes { out.append(contentsOf: $0) } }
    return out
  }

  /// Decodes every tensor of a file's bytes; `path` only names the file in errors.
  public static func decode(_ data: Data, path: String) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
    guard data.count >= 8 else { throw SafeTensorsError.truncated(path: path) }
    let headerLength = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
    guard headerLength > 0, 8 + headerLength <= data.count else { throw SafeTensorsError.truncated(path: path) }
    let headerData = data.subdata(in: 8..<(8 + headerLength))
    guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
      throw SafeTensorsError.badHeader(path: path, reason: "not a JSON object")
    }
    var tensors: [String: Tensor] = [:]
    var metadata: [String: String] = [:]
    let base = 8 + headerLength
    for (name, value) in header {
      if name == "__metadata__" { metadata = value as? [String: String] ?? [:]; continue }
      guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
            let shape = info["shape"] as? [Int], let range = info["data_offsets"] as? [Int], range.count == 2 else {
        throw SafeTensorsError.badHeader(path: path, reason: "entry \(name) lacks dtype, shape or data_offsets")
      }
      guard dtype == "F32" else { throw SafeTensorsError.badHeader(path: path, reason: "\(name) has dtype \(dtype), only F32 is read") }
      let count = shape.reduce(1, *)
      guard range[1] - range[0] == count * 4, range[0] >= 0, base + range[1] <= data.count else {
        throw SafeTensorsError.badHeader(path: path, reason: "\(name) data_offsets do not match its shape or the file size")
      }
      var values = [Float](repeating: 0, count: count)
      values.withUnsafeMutableBytes { dst in
        data.withUnsafeBytes { src in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(base + range[0])..<(base + range[1])])) }
      }
      tensors[name] = Tensor(shape: shape, values: values)
    }
    return (tensors, metadata)
  }
}

/// Writes `data` to `path` atomically: a temporary file in the same folder, then a rename, so a
/// crash never leaves a half-written file under the final name.
public func writeAtomically(_ data: Data, to path: String) throws {
  let url = URL(fileURLWithPath: path)
  try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
  let temp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
  try data.write(to: temp)
  if rename(temp.path, url.path) != 0 {
    try? FileManager.default.removeItem(at: temp)
    throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
  }
}
