import Foundation

/// Provenance stamped on every benchmark record: date, commit and machine.
struct RunInfo: Codable {
  var date: String
  var commit: String
  var machine: String

  static func current() -> RunInfo {
    let formatter = ISO8601DateFormatter()
    let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
      .split(separator: "\n").first { $0.hasPrefix("model name") }?
      .split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown cpu"
    return RunInfo(date: formatter.string(from: Date()), commit: gitCommit(),
                   machine: "\(cpu), \(ProcessInfo.processInfo.activeProcessorCount) cores")
  }

  /// `git rev-parse --short HEAD` (with `+dirty` when the tree has changes), or `HSTU_COMMIT`.
  static func gitCommit() -> String {
    if let c = ProcessInfo.processInfo.environment["HSTU_COMMIT"] { return c }
    func git(_ args: [String]) -> String? {
      let p = Process()
      p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
      p.arguments = ["git"] + args
      let pipe = Pipe()
      p.standardOutput = pipe
      p.standardError = FileHandle.nullDevice
      guard (try? p.run()) != nil else { return nil }
      p.waitUntilExit()
      guard p.terminationStatus == 0 else { return nil }
      return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        .trimmingCharacters(in: .whitespacesAndNewlines)
    }
    guard let head = git(["rev-parse", "--short", "HEAD"]) else { return "unknown" }
    // Changed result files do not make the code dirty.
    let dirty = git(["status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"]).map { !$0.isEmpty } ?? false
    return dirty ? head + "+dirty" : head
  }
}
