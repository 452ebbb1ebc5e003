import Foundation
import Testing
import UltraHSTU

@Suite struct DataRealDatasetTests {
  static let ml1m = "/work/shared/data/ml-1m/ratings_seq.tsv.gz"

  @Test(.enabled(if: FileManager.default.fileExists(atPath: DataRealDatasetTests.ml1m)))
  func movielens1M() throws {
    let loaded = try DatasetLoader.loadDataset(path: Self.ml1m, cacheDirectory: nil)
    let s = loaded.sequences
    #expect(loaded.format == .movielensSeqTSV)
    #expect(s.userCount == 6040)
    #expect(s.itemCount == 3706)
    #expect(s.eventCount == 1_000_209)
    #expect(s.userIDs.first == 1)
    #expect(Array(originalItems(s)[0].prefix(3)) == [3186, 1721, 1022])
    #expect(s.timestamps == nil)
    #expect(s.ratings?.count == 1_000_209)

    let split = LeaveOneOutSplit(s)
    #expect(split.evaluationUsers.count == 6040)
    #expect(split.shortUserCount == 0)
  }

  @Test func embeddedMovielensLatestSmall() throws {
    let path = try EmbeddedDataset.mlLatestSmallRatingsPath()
    let loaded = try DatasetLoader.loadDataset(path: path, cacheDirectory: nil)
    let s = loaded.sequences
    #expect(loaded.format == .movielensCSV)
    #expect(s.userCount == 671)
    #expect(s.itemCount == 9066)
    #expect(s.eventCount == 100_004)
    let timestamps = try #require(s.timestamps)
    let chronological = (0..<s.userCount).allSatisfy { u in
      s.range(of: u).dropFirst().allSatisfy { timestamps[$0 - 1] <= timestamps[$0] }
    }
    #expect(chronological)
    #expect(Set(s.ratings ?? []) == Set(stride(from: Float(0.5), through: 5, by: 0.5)))
  }
}
