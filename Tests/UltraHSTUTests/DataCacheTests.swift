import Foundation
import Testing
import UltraHSTU

@Suite struct DataCacheTests {
  func cacheFiles(_ directory: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".cache.bin") }
  }

  @Test func roundTripEqualsParsing() throws {
    let cache = try Fixture.temporaryDirectory() + "/nested/cache"
    for name in ["ratings.dat", "ratings_seq.tsv.gz", "u.data.gz", "ratings.csv", "beauty.txt.gz", "interactions.csv"] {
      let path = Fixture.path(name)
      let parsed = try DatasetLoader.load(path: path, cacheDirectory: nil)
      let first = try DatasetLoader.loadDataset(path: path, cacheDirectory: cache)
      let second = try DatasetLoader.loadDataset(path: path, cacheDirectory: cache)
      #expect(!first.fromCache)
      #expect(second.fromCache)
      #expect(second.format == first.format)
      #expect(first.sequences == parsed)
      #expect(second.sequences == parsed)
    }
    #expect(try cacheFiles(cache).count == 6)
    #expect(try FileManager.default.contentsOfDirectory(atPath: cache).allSatisfy { !$0.contains(".tmp.") })
  }

  @Test func staleCacheIsRebuilt() throws {
    let directory = try Fixture.temporaryDirectory()
    let cache = directory + "/cache"
    let path = directory + "/events.csv"
    try "1,10\n1,11\n".write(toFile: path, atomically: false, encoding: .utf8)
    _ = try DatasetLoader.load(path: path, format: .csv, cacheDirectory: cache)

    try "1,10\n1,11\n2,12\n".write(toFile: path, atomically: false, encoding: .utf8)
    let changed = try DatasetLoader.loadDataset(path: path, format: .csv, cacheDirectory: cache)
    #expect(!changed.fromCache)
    #expect(changed.sequences.userCount == 2)

    // Same size, different content and modification time.
    try "1,10\n1,13\n2,12\n".write(toFile: path, atomically: false, encoding: .utf8)
    try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 60)], ofItemAtPath: path)
    let touched = try DatasetLoader.loadDataset(path: path, format: .csv, cacheDirectory: cache)
    #expect(!touched.fromCache)
    #expect(touched.sequences.originalItemIDs == [0, 10, 12, 13])
    #expect(try DatasetLoader.loadDataset(path: path, format: .csv, cacheDirectory: cache).fromCache)

    // The cache is keyed by the format actually used, so `auto` finds the csv cache.
    #expect(try DatasetLoader.loadDataset(path: path, format: .auto, cacheDirectory: cache).fromCache)
  }

  @Test func corruptCacheIsIgnoredAndRebuilt() throws {
    let cache = try Fixture.temporaryDirectory()
    let path = Fixture.path("ratings.csv")
    let parsed = try DatasetLoader.load(path: path, cacheDirectory: cache)
    let file = cache + "/" + (try #require(try cacheFiles(cache).first))
    let original = try Data(contentsOf: URL(fileURLWithPath: file))

    var flipped = original
    flipped[flipped.count / 2] ^= 0x40
    try flipped.write(to: URL(fileURLWithPath: file))
    let afterFlip = try DatasetLoader.loadDataset(path: path, cacheDirectory: cache)
    #expect(!afterFlip.fromCache)
    #expect(afterFlip.sequences == parsed)

    try original.prefix(original.count - 13).write(to: URL(fileURLWithPath: file))
    let afterTruncation = try DatasetLoader.loadDataset(path: path, cacheDirectory: cache)
    #expect(!afterTruncation.fromCache)
    #expect(afterTruncation.sequences == parsed)

    try Data().write(to: URL(fileURLWithPath: file))
    #expect(!(try DatasetLoader.loadDataset(path: path, cacheDirectory: cache).fromCache))
    #expect(try DatasetLoader.loadDataset(path: path, cacheDirectory: cache).fromCache)
  }

  @Test func unwritableCacheDirectoryIsNotAnError() throws {
    let blocker = try Fixture.write("not a directory", named: "blocker")
    let s = try DatasetLoader.load(path: Fixture.path("ratings.dat"), cacheDirectory: blocker + "/cache")
    #expect(s.userCount == 2)
  }
}
