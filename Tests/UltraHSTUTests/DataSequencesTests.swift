import Testing
import UltraHSTU

@Suite struct DataSequencesTests {
  @Test func chronologicalOrderIsStableOnTies() {
    let log = InteractionLog(
      userIDs: [9, 4, 9, 9, 4, 9],
      itemIDs: [70, 20, 50, 60, 30, 40],
      ratings: [1, 2, 3, 4, 5, 6],
      timestamps: [300, 10, 100, 100, 5, 100])
    let s = log.userSequences()
    #expect(s.userIDs == [4, 9])
    #expect(originalItems(s) == [[30, 20], [50, 60, 40, 70]])
    #expect(s.ratings == [5, 2, 3, 4, 6, 1])
    #expect(s.timestamps == [5, 10, 100, 100, 100, 300])
  }

  @Test func sequencePositionsOrderWithoutBecomingTimestamps() {
    let log = InteractionLog(userIDs: [1, 1, 1], itemIDs: [5, 6, 7], sequencePositions: [2, 0, 1])
    let s = log.userSequences()
    #expect(originalItems(s) == [[6, 7, 5]])
    #expect(s.timestamps == nil)
  }

  @Test func fileOrderWithoutTimeOrPosition() {
    let s = InteractionLog(userIDs: [2, 1, 2, 1], itemIDs: [8, 9, 7, 8]).userSequences()
    #expect(originalItems(s) == [[9, 8], [8, 7]])
    #expect(s.ratings == nil)
  }

  @Test func denseReindexingInAscendingOriginalID() {
    let s = InteractionLog(userIDs: [1_000_000, 3, 3], itemIDs: [900_000_000_000, 42, 7]).userSequences()
    #expect(s.itemCount == 3)
    #expect(s.originalItemIDs == [0, 7, 42, 900_000_000_000])
    #expect(s.userIDs == [3, 1_000_000])
    #expect(s.items == [2, 1, 3])
    #expect(s.offsets == [0, 2, 3])
    #expect(s.items.allSatisfy { $0 >= 1 && Int($0) <= s.itemCount })
  }
}
