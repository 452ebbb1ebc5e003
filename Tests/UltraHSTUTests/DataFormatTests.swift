import Foundation
import Testing
import UltraHSTU

/// Paths of the hand-made files in `Fixtures/` and scratch files for tests.
enum Fixture {
  static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

  static func path(_ name: String) -> String { directory + "/" + name }

  /// A new empty directory under the system's temporary directory.
  static func temporaryDirectory() throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("ultrahstu-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
  }

  /// Writes `text` to a file called `name` in a new temporary directory and returns its path.
  static func write(_ text: String, named name: String) throws -> String {
    let path = try temporaryDirectory() + "/" + name
    try text.write(toFile: path, atomically: false, encoding: .utf8)
    return path
  }
}

/// Per-user lists of original item ids, for readable expectations.
func originalItems(_ s: UserSequences) -> [[Int64]] {
  (0..<s.userCount).map { u in s.range(of: u).map { s.originalItemIDs[Int(s.items[$0])] } }
}

@Suite struct DataFormatTests {
  func load(_ name: String, _ format: DatasetFormat = .auto) throws -> LoadedDataset {
    try DatasetLoader.loadDataset(path: Fixture.path(name), format: format, cacheDirectory: nil)
  }

  @Test func movielensDat() throws {
    let loaded = try load("ratings.dat", .movielensDat)
    let s = loaded.sequences
    #expect(s.userIDs == [10, 20])
    #expect(s.originalItemIDs == [0, 10, 30, 40, 50])
    #expect(s.itemCount == 4)
    #expect(s.offsets == [0, 3, 5])
    #expect(s.items == [3, 2, 4, 2, 1])
    #expect(s.ratings == [3, 1, 5, 4, 2])
    #expect(s.timestamps == [1_000_000_800, 1_000_000_800, 1_000_000_900, 1_000_000_760, 1_000_000_760])
  }

  @Test func movielensSeqTSVOrdersBySequencePosition() throws {
    for name in ["ratings_seq.tsv", "ratings_seq.tsv.gz"] {
      let s = try load(name, .movielensSeqTSV).sequences
      #expect(originalItems(s) == [[1002, 3001, 1500], [1002]])
      #expect(s.items == [1, 3, 2, 1])
      #expect(s.ratings == [5, 4, 4, 3])
      #expect(s.timestamps == nil)
    }
  }

  @Test func ml100kGzip() throws {
    let s = try load("u.data.gz", .ml100k).sequences
    #expect(s.userIDs == [53, 71])
    #expect(originalItems(s) == [[612], [44, 501]])
    #expect(s.ratings == [3, 2, 3])
    #expect(s.timestamps == [890_000_000, 880_000_100, 880_000_300])
  }

  @Test func movielensCSVWithHalfStarsAndCRLF() throws {
    let s = try load("ratings.csv", .movielensCSV).sequences
    #expect(s.userIDs == [1, 2])
    #expect(originalItems(s) == [[1061, 31, 1029], [10]])
    #expect(s.items == [4, 2, 3, 1])
    #expect(s.ratings == [0.5, 2.5, 3.0, 4.5])
    #expect(s.timestamps == [1_300_000_100, 1_300_000_200, 1_300_000_300, 900_000_000])
  }

  @Test func userItemKeepsFileOrder() throws {
    let s = try load("beauty.txt.gz", .userItem).sequences
    #expect(originalItems(s) == [[5, 3, 9], [3]])
    #expect(s.items == [2, 1, 3, 1])
    #expect(s.ratings == nil)
    #expect(s.timestamps == nil)
  }

  @Test func genericCSVWithHeaderAndRating() throws {
    let s = try load("interactions.csv", .csv).sequences
    #expect(s.userIDs == [3, 7])
    #expect(originalItems(s) == [[100], [100, 200]])
    #expect(s.ratings == [2, 1, 0.5])
    #expect(s.timestamps == nil)
  }

  @Test func genericTabSeparatedWithTimestamp() throws {
    let s = try load("events.tsv", .csv).sequences
    #expect(originalItems(s) == [[9, 8]])
    #expect(s.timestamps == [100, 300])
    #expect(s.ratings == [1, 1])
  }

  @Test(arguments: [
    ("ratings.dat", DatasetFormat.movielensDat),
    ("ratings_seq.tsv", .movielensSeqTSV),
    ("ratings_seq.tsv.gz", .movielensSeqTSV),
    ("u.data.gz", .ml100k),
    ("ratings.csv", .movielensCSV),
    ("beauty.txt.gz", .userItem),
    ("interactions.csv", .csv),
    ("events.tsv", .csv),
  ])
  func autoDetection(name: String, expected: DatasetFormat) throws {
    #expect(try DatasetLoader.detectFormat(path: Fixture.path(name)) == expected)
    let auto = try load(name)
    #expect(auto.format == expected)
    #expect(auto.detected)
    #expect(auto.sequences == (try load(name, expected)).sequences)
  }

  @Test func detectionRules() {
    #expect(DatasetFormat.detect(fileName: "x/ratings.dat.gz", firstLine: "1,2") == .movielensDat)
    #expect(DatasetFormat.detect(fileName: "r.txt", firstLine: "1::2::3::4") == .movielensDat)
    #expect(DatasetFormat.detect(fileName: "a", firstLine: "userId,movieId,rating,timestamp\r") == .movielensCSV)
    #expect(DatasetFormat.detect(fileName: "data/u.data", firstLine: "1\t2\t3\t4") == .ml100k)
    #expect(DatasetFormat.detect(fileName: "b.txt", firstLine: "12 34") == .userItem)
    #expect(DatasetFormat.detect(fileName: "c.txt", firstLine: "user,item") == .csv)
    #expect(DatasetFormat.detect(fileName: "c.txt", firstLine: "hello") == nil)
    #expect(DatasetFormat.detect(fileName: "c.txt", firstLine: "1,2,3,4,5") == nil)
  }

  @Test func formatNames() throws {
    #expect(DatasetFormat.allCases.map(\.rawValue) == ["auto", "ml-dat", "ml-seq-tsv", "ml-100k", "ml-csv", "user-item", "csv"])
    #expect(try DatasetFormat.named("ml-100k") == .ml100k)
  }
}
