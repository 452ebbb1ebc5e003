import Foundation
import Testing
import UltraHSTU

@Suite struct DataErrorTests {
  /// Loads `text` written to a file called `name` and returns the error, which must name that file.
  func error(_ text: String, named name: String, _ format: DatasetFormat = .auto) throws -> DatasetError? {
    let path = try Fixture.write(text, named: name)
    return error(path: path, format)
  }

  func error(path: String, _ format: DatasetFormat = .auto) -> DatasetError? {
    do {
      _ = try DatasetLoader.load(path: path, format: format, cacheDirectory: nil)
      Issue.record("\(path) loaded without an error")
      return nil
    } catch let e as DatasetError {
      #expect(e.file == path)
      #expect(e.description.hasPrefix(path))
      return e
    } catch {
      Issue.record("unexpected error \(error)")
      return nil
    }
  }

  @Test func wrongFieldCount() throws {
    let e = try error("1::2::3::4\n1::2::3\n", named: "ratings.dat")
    #expect(e?.line == 2)
    #expect(e?.kind == .wrongFieldCount(expected: "4", found: 3))
    #expect(e?.description.contains("ratings.dat:2: expected 4 fields, found 3") == true)
  }

  @Test func genericCSVNeedsConsistentFieldCounts() throws {
    let e = try error("1,2\n3,4,5\n", named: "x.csv", .csv)
    #expect(e?.line == 2)
    #expect(e?.kind == .wrongFieldCount(expected: "2", found: 3))
    let wide = try error("1,2,3,4,5\n", named: "y.csv", .csv)
    #expect(wide?.kind == .wrongFieldCount(expected: "2 to 4", found: 5))
    #expect(wide?.line == 1)
  }

  @Test func nonNumericIDs() throws {
    let item = try error("user,item\n1,2\n\n1,abc\n", named: "x.csv")
    #expect(item?.line == 4)
    #expect(item?.kind == .nonNumericID(column: "item id", text: "abc"))
    let user = try error("u7 3\n", named: "x.txt", .userItem)
    #expect(user?.line == 1)
    #expect(user?.kind == .nonNumericID(column: "user id", text: "u7"))
    let negative = try error("1\t-2\t3\t4\n", named: "u.data")
    #expect(negative?.kind == .nonNumericID(column: "item id", text: "-2"))
  }

  @Test func badRatingTimestampAndPosition() throws {
    let rating = try error("userId,movieId,rating,timestamp\n1,2,x,5\n", named: "ratings.csv")
    #expect(rating?.line == 2)
    #expect(rating?.kind == .badRating("x"))
    let time = try error("1\t2\t3\t12a\n", named: "u.data")
    #expect(time?.line == 1)
    #expect(time?.kind == .badTimestamp("12a"))
    let position = try error("user_id\tmovie_id\trating\tseq_pos\n1\t2\t3\t-1\n", named: "seq.tsv")
    #expect(position?.line == 2)
    #expect(position?.kind == .badSequencePosition("-1"))
  }

  @Test func badHeader() throws {
    let e = try error("user_id\titem\trating\tseq_pos\n1\t2\t3\t0\n", named: "seq.tsv", .movielensSeqTSV)
    #expect(e?.line == 1)
    #expect(e?.kind == .badHeader(expected: "user_id,movie_id,rating,seq_pos", found: "user_id,item,rating,seq_pos"))
  }

  @Test func emptyFiles() throws {
    #expect(try error("", named: "empty.csv")?.kind == .empty)
    #expect(try error("\n  \n", named: "blank.csv", .csv)?.kind == .empty)
    let headerOnly = try error("userId,movieId,rating,timestamp\n", named: "ratings.csv")
    #expect(headerOnly?.kind == .empty)
    #expect(headerOnly?.line == nil)
  }

  @Test func undetectableAndUnknownFormats() throws {
    let e = try error("\nhello\n", named: "notes.txt")
    #expect(e?.kind == .undetectableFormat)
    #expect(e?.line == 2)
    #expect(throws: DatasetError(file: nil, .unknownFormat("parquet"))) { try DatasetFormat.named("parquet") }
  }

  @Test func missingAndUnreadableFiles() throws {
    let missing = try Fixture.temporaryDirectory() + "/missing.csv"
    #expect(error(path: missing)?.kind == .unreadable("No such file or directory"))
    #expect(error(path: missing, .csv)?.kind == .unreadable("No such file or directory"))
    let directory = try Fixture.temporaryDirectory()
    #expect(error(path: directory, .csv)?.kind == .unreadable("not a regular file"))
  }

  @Test func corruptGzip() throws {
    let truncated = error(path: Fixture.path("truncated.csv.gz"), .csv)
    guard case .corruptGzip = truncated?.kind else {
      Issue.record("expected corrupt gzip, got \(String(describing: truncated))")
      return
    }
    // The data before the damage parses; the error names the line that could not be completed.
    #expect(truncated?.line == 39)
    let garbage = error(path: Fixture.path("garbage.csv.gz"), .csv)
    guard case .corruptGzip = garbage?.kind else {
      Issue.record("expected corrupt gzip, got \(String(describing: garbage))")
      return
    }
    #expect(garbage?.line == 1)
  }

  @Test func binaryNoiseDoesNotCrash() throws {
    let bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
    let path = try Fixture.temporaryDirectory() + "/noise.bin"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    for format in DatasetFormat.allCases {
      #expect(throws: DatasetError.self) { try DatasetLoader.load(path: path, format: format, cacheDirectory: nil) }
    }
  }
}
