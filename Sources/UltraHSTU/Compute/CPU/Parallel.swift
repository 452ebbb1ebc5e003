import Dispatch
import Foundation

/// Data-parallel loops over the machine's cores.
public enum Parallel {
  /// Worker count: `HSTU_THREADS` if set, else the number of active processors.
  public static let workers: Int = {
    if let s = ProcessInfo.processInfo.environment["HSTU_THREADS"], let n = Int(s), n > 0 { return n }
    return max(1, ProcessInfo.processInfo.activeProcessorCount)
  }()

  /// Runs `body(range)` over `0..<count` split into contiguous chunks, one chunk per worker.
  /// Small loops (fewer than `minimumPerWorker` items per worker) run on the calling thread.
  @inline(__always)
  public static func forChunks(_ count: Int, minimumPerWorker: Int = 1, _ body: (Range<Int>) -> Void) {
    let chunks = min(workers, count / max(1, minimumPerWorker))
    if chunks <= 1 { if count > 0 { body(0..<count) }; return }
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
      body((count * c / chunks)..<(count * (c + 1) / chunks))
    }
  }

  /// Runs `body(worker, i)` for every `i` in `0..<count`, items handed out dynamically (good for
  /// uneven work); `worker` in `0..<workers` identifies the calling worker, for per-worker scratch.
  public static func forEach(_ count: Int, _ body: (_ worker: Int, _ item: Int) -> Void) {
    if count <= 1 || workers == 1 { for i in 0..<count { body(0, i) }; return }
    let next = UnsafeMutablePointer<Int>.allocate(capacity: 1)
    next.initialize(to: 0)
    defer { next.deallocate() }
    let lock = NSLock()
    DispatchQueue.concurrentPerform(iterations: min(workers, count)) { worker in
      while true {
        lock.lock(); let i = next.pointee; next.pointee += 1; lock.unlock()
        if i >= count { return }
        body(worker, i)
      }
    }
  }
}
