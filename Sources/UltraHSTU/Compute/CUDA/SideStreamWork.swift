/// Work queued on the device's side stream that the main stream has not waited for yet: what
/// `CUDADevice.fork` returns and `CUDADevice.join` takes. The arena memory the work uses stays
/// reserved until the join.
public struct SideStreamWork {
  /// The arena's top before the forked work allocated its memory.
  let arenaMark: Int
}

extension CUDADevice {
  /// Queues `body`'s launches on the side stream, after everything queued so far on the main
  /// stream, and returns without waiting: the main stream's later work runs alongside it until
  /// `join`. Arena memory allocated from `arenaMark` on (before the fork or inside `body`) must stay
  /// reserved until the join, so the caller neither releases it nor allocates anything between
  /// fork and join that outlives the join.
  func fork(arenaMark: Int, _ body: () throws -> Void) throws -> SideStreamWork {
    precondition(stream == mainStream, "fork inside fork")
    try driver.check(driver.cuEventRecord(forkEvent, mainStream), "cuEventRecord")
    try driver.check(driver.cuStreamWaitEvent(sideStream, forkEvent, 0), "cuStreamWaitEvent")
    stream = sideStream
    defer { stream = mainStream }
    try body()
    return SideStreamWork(arenaMark: arenaMark)
  }

  /// Queues `body`'s launches on the side stream after `work` (not joined yet), which the same
  /// `join` then covers. `body` must not allocate arena memory.
  func continueOnSideStream(after work: SideStreamWork, _ body: () throws -> Void) throws {
    precondition(stream == mainStream, "continueOnSideStream inside fork")
    let top = arena.mark()
    stream = sideStream
    defer { stream = mainStream }
    try body()
    precondition(arena.mark() == top, "side-stream work allocated arena memory")
  }

  /// Makes the main stream wait for `work` and releases the arena memory it used.
  func join(_ work: SideStreamWork) throws {
    try driver.check(driver.cuEventRecord(joinEvent, sideStream), "cuEventRecord")
    try driver.check(driver.cuStreamWaitEvent(mainStream, joinEvent, 0), "cuStreamWaitEvent")
    precondition(arena.mark() >= work.arenaMark, "the arena was released below forked work")
    arena.release(to: work.arenaMark)
  }
}
