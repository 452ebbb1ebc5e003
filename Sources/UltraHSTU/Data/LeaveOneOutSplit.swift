/// The leave-one-out protocol (SASRec, BERT4Rec, HSTU): of a user's `n` chronological events, the
/// last is the test target, the one before it the validation target, and the rest are training events.
///
/// Users with fewer than 3 events cannot give both targets and still have a history: all their events
/// are training events and they are left out of evaluation (`shortUserCount` counts them).
public struct LeaveOneOutSplit: Sendable, Equatable {
  /// Which held-out target to evaluate.
  public enum Stage: String, Sendable, CaseIterable {
    case validation
    case test
  }

  /// Minimum events a user needs to be evaluated.
  public static let minimumEvents = 3

  /// The event offsets of the sequences the split was built from.
  public let offsets: [Int]
  /// Users that have validation and test targets, ascending.
  public let evaluationUsers: [Int]
  /// Users with fewer than `minimumEvents` events (training only).
  public let shortUserCount: Int

  public init(_ sequences: UserSequences) {
    offsets = sequences.offsets
    let users = 0..<sequences.userCount
    evaluationUsers = users.filter { sequences.range(of: $0).count >= Self.minimumEvents }
    shortUserCount = sequences.userCount - evaluationUsers.count
  }

  /// Number of users.
  public var userCount: Int { offsets.count - 1 }

  /// Whether `user` has validation and test targets.
  public func isEvaluated(user: Int) -> Bool { offsets[user + 1] - offsets[user] >= Self.minimumEvents }

  /// End (exclusive, absolute index into the event arrays) of `user`'s training events; they start at
  /// `offsets[user]`.
  public func trainEnd(user: Int) -> Int { isEvaluated(user: user) ? offsets[user + 1] - 2 : offsets[user + 1] }

  /// Absolute index of `user`'s validation target, or nil for a short user.
  public func validationIndex(user: Int) -> Int? { isEvaluated(user: user) ? offsets[user + 1] - 2 : nil }

  /// Absolute index of `user`'s test target, or nil for a short user.
  public func testIndex(user: Int) -> Int? { isEvaluated(user: user) ? offsets[user + 1] - 1 : nil }

  /// Absolute index of `user`'s target for `stage`, or nil for a short user.
  public func targetIndex(user: Int, stage: Stage) -> Int? {
    stage == .validation ? validationIndex(user: user) : testIndex(user: user)
  }

  /// The events a model sees before `user`'s `stage` target (all earlier events), or nil for a short user.
  public func history(user: Int, stage: Stage) -> Range<Int>? {
    targetIndex(user: user, stage: stage).map { offsets[user]..<$0 }
  }

  /// Total number of training events over all users.
  public var trainingEventCount: Int {
    (0..<userCount).reduce(0) { $0 + trainEnd(user: $1) - offsets[$1] }
  }
}
