/// Work queued on the device's side stream that the main stream has not waited for yet: what
/// `CUDADevice.fork` and `continueOnSideStream` return and `CUDADevice.join` takes. The arena
/// memory the work uses stays reserved until the join.
public struct SideStreamWork {
  /// Recorded on the side stream after the work: what the join makes the main stream wait for.
  let done: OpaquePointer?
  /// The arena's top before the forked work allocated its memory; nil when it allocates none.
  let arenaMark: Int?
}

extension CUDADevice {
  /// Queues `body`'s launches on the side stream, after everything queued so far on the main
  /// stream, and returns without waiting: the main stream's later work runs alongside it until
  /// `join`. Arena memory allocated from `arenaMark` on (before the fork or inside `body`) must stay
  /// reserved until the join, so the caller neither releases it nor allocates anything between
  /// fork and join that outlives the join.
  func fork(arenaMark: Int, _ body: () throws -> Void) throws -> SideStreamWork {
    try driver.check(driver.cuEventRecord(forkEvent, mainStream), "cuEventRecord")
    try driver.check(driver.cuStreamWaitEvent(sideStream, forkEvent, 0), "cuStreamWaitEvent")
    return try onSideStream(arenaMark: arenaMark, body)
  }

  /// Queues `body`'s launches on the side stream after the side stream's earlier work (such as
  /// `work`, forked and not joined yet); the result is joined on its own, and `body` must not
  /// allocate arena memory.
  func continueOnSideStream(after work: SideStreamWork, _ body: () throws -> Void) throws -> SideStreamWork {
    let top = arena.mark()
    let continued = try onSideStream(arenaMark: nil, body)
    precondition(arena.mark() == top, "side-stream work allocated arena memory")
    return continued
  }

  /// Makes the main stream wait for `work` and releases the arena memory it used.
  func join(_ work: SideStreamWork) throws {
    try driver.check(driver.cuStreamWaitEvent(mainStream, work.done, 0), "cuStreamWaitEvent")
    idleEvents.append(work.done)
    if let mark = work.arenaMark {
      precondition(arena.mark() >= mark, "the arena was released below forked work")
      arena.release(to: mark)
    }
  }

  private func onSideStream(arenaMark: Int?, _ body: () throws -> Void) throws -> SideStreamWork {
    precondition(stream == mainStream, "side-stream work inside side-stream work")
    stream = sideStream
    defer { stream = mainStream }
    try body()
    var done = idleEvents.popLast() ?? nil
    if done == nil { try driver.check(driver.cuEventCreate(&done, 2), "cuEventCreate") }  // CU_EVENT_DISABLE_TIMING
    try driver.check(driver.cuEventRecord(done, sideStream), "cuEventRecord")
    return SideStreamWork(done: done, arenaMark: arenaMark)
  }
}
