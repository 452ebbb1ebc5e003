import Testing
import UltraHSTU

@Suite struct DataSplitTests {
  /// Users with 5, 2, 3, 1 events.
  let sequences = InteractionLog(
    userIDs: [1, 1, 1, 1, 1, 2, 2, 3, 3, 3, 4],
    itemIDs: [1, 2, 3, 4, 5, 1, 2, 3, 2, 1, 9]
  ).userSequences()

  @Test func leaveOneOutIndices() {
    let split = LeaveOneOutSplit(sequences)
    #expect(split.userCount == 4)
    #expect(split.evaluationUsers == [0, 2])
    #expect(split.shortUserCount == 2)

    #expect(split.trainEnd(user: 0) == 3)
    #expect(split.validationIndex(user: 0) == 3)
    #expect(split.testIndex(user: 0) == 4)
    #expect(split.history(user: 0, stage: .validation) == 0..<3)
    #expect(split.history(user: 0, stage: .test) == 0..<4)

    #expect(split.trainEnd(user: 2) == 8)
    #expect(split.validationIndex(user: 2) == 8)
    #expect(split.testIndex(user: 2) == 9)
    #expect(split.targetIndex(user: 2, stage: .test) == 9)
  }

  @Test func shortUsersOnlyTrain() {
    let split = LeaveOneOutSplit(sequences)
    #expect(split.trainEnd(user: 1) == 7)
    #expect(split.validationIndex(user: 1) == nil)
    #expect(split.testIndex(user: 1) == nil)
    #expect(split.history(user: 3, stage: .test) == nil)
    #expect(split.trainEnd(user: 3) == 11)
    #expect(split.trainingEventCount == 3 + 2 + 1 + 1)
  }
}
