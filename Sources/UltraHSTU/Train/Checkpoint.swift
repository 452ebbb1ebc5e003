import Foundation

/// Errors of checkpoint I/O.
public enum CheckpointError: Error, CustomStringConvertible {
  case missing(String)
  case inconsistent(String)
  case incompatible(String)

  public var description: String {
    switch self {
    case .missing(let s): return "checkpoint incomplete: \(s)"
    case .inconsistent(let s): return "checkpoint inconsistent: \(s)"
    case .incompatible(let s): return "checkpoint does not match this run: \(s)"
    }
  }
}

/// What a checkpoint folder's `config.json` records: enough to rebuild the model and check that a
/// resumed run uses the same data and recipe.
public struct CheckpointConfig: Codable, Equatable, Sendable {
  public var preset: String
  public var model: ModelConfig
  public var train: TrainConfig
  public var itemCount: Int
  public var dataset: String
  /// Original id of every dense item index (index 0 is padding), so a served model maps back.
  public var originalItemIDs: [Int64]
}

/// A checkpoint folder: `model.safetensors` (weights, PyTorch-readable), `optimizer.safetensors`
/// (AdamW moments), `best.safetensors` (weights of the best validation epoch), `config.json` and
/// `state.json`. Every file is written atomically; `state.json` is written last and names the step
/// the weight files must carry, so a crash between files is detected on resume.
public struct Checkpoint {
  public var directory: String

  public init(directory: String) { self.directory = directory }

  func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

  public var exists: Bool { FileManager.default.fileExists(atPath: path("state.json")) }

  static func tensors(_ p: ParameterStore, from buffer: HostBuffer, prefix: String = "") -> [(String, SafeTensors.Tensor)] {
    p.entries.map { e in
      (prefix + e.name, SafeTensors.Tensor(shape: e.shape, values: Array(UnsafeBufferPointer(start: buffer.pointer + e.offset, count: e.count))))
    }
  }

  /// Writes the weights only (used for `best.safetensors`).
  public func saveWeights(_ p: ParameterStore, name: String, metadata: [String: String]) throws {
    try writeAtomically(SafeTensors.encode(Checkpoint.tensors(p, from: p.values), metadata: metadata), to: path(name))
  }

  /// Writes the full training state.
  public func save<State: Encodable>(config: CheckpointConfig, parameters p: ParameterStore, state: State) throws {
    let meta = ["step": String(p.step), "format": "ultrahstu-1"]
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try writeAtomically(encoder.encode(config), to: path("config.json"))
    try saveWeights(p, name: "model.safetensors", metadata: meta)
    let moments = Checkpoint.tensors(p, from: p.firstMoment, prefix: "m.") + Checkpoint.tensors(p, from: p.secondMoment, prefix: "v.")
    try writeAtomically(SafeTensors.encode(moments, metadata: meta), to: path("optimizer.safetensors"))
    try writeAtomically(encoder.encode(state), to: path("state.json"))
  }

  public func loadConfig() throws -> CheckpointConfig {
    guard let data = FileManager.default.contents(atPath: path("config.json")) else { throw CheckpointError.missing(path("config.json")) }
    return try JSONDecoder().decode(CheckpointConfig.self, from: data)
  }

  public func loadState<State: Decodable>(_ type: State.Type) throws -> State {
    guard let data = FileManager.default.contents(atPath: path("state.json")) else { throw CheckpointError.missing(path("state.json")) }
    return try JSONDecoder().decode(type, from: data)
  }

  /// Loads weights (and, with `optimizer`, the AdamW moments and step) into `p`.
  public func load(into p: ParameterStore, weights name: String = "model.safetensors", optimizer: Bool) throws {
    let (weights, meta) = try read(name)
    try copy(weights, into: p.values, p, prefix: "", file: name)
    guard optimizer else { return }
    let (moments, optMeta) = try read("optimizer.safetensors")
    guard let step = meta["step"].flatMap(Int.init), optMeta["step"] == meta["step"] else {
      throw CheckpointError.inconsistent("model.safetensors and optimizer.safetensors are from different steps")
    }
    try copy(moments, into: p.firstMoment, p, prefix: "m.", file: "optimizer.safetensors")
    try copy(moments, into: p.secondMoment, p, prefix: "v.", file: "optimizer.safetensors")
    p.step = step
  }

  private func read(_ name: String) throws -> ([String: SafeTensors.Tensor], [String: String]) {
    guard let data = FileManager.default.contents(atPath: path(name)) else { throw CheckpointError.missing(path(name)) }
    return try SafeTensors.decode(data, path: path(name))
  }

  private func copy(_ tensors: [String: SafeTensors.Tensor], into buffer: HostBuffer, _ p: ParameterStore,
                    prefix: String, file: String) throws {
    for e in p.entries {
      guard let t = tensors[prefix + e.name] else { throw SafeTensorsError.missingTensor(path: path(file), name: prefix + e.name) }
      guard t.shape == e.shape else {
        throw SafeTensorsError.shapeMismatch(path: path(file), name: prefix + e.name, expected: e.shape, found: t.shape)
      }
      t.values.withUnsafeBufferPointer { (buffer.pointer + e.offset).update(from: $0.baseAddress!, count: e.count) }
    }
  }
}
