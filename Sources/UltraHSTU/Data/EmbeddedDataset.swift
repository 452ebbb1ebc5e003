import EmbeddedData
import Foundation

/// Datasets compiled into the binary.
public enum EmbeddedDataset {
  /// MovieLens ml-latest-small (October 2016: 671 users, 9,066 items, 100,004 ratings)
  /// `ratings.csv.gz`, as bytes.
  public static var mlLatestSmallRatings: Data {
    var size: UInt = 0
    let bytes = hstu_ml_latest_small_ratings_gz(&size)!
    return Data(bytes: bytes, count: Int(size))
  }

  /// A file holding `mlLatestSmallRatings` for the path-based loader: written (atomically) under
  /// `directory` unless it already holds exactly these bytes.
  /// - Throws: `DatasetError` when the file cannot be written.
  public static func mlLatestSmallRatingsPath(directory: String = DatasetLoader.defaultCacheDirectory
                                                ?? NSTemporaryDirectory()) throws -> String {
    let bytes = mlLatestSmallRatings
    let path = (directory as NSString).appendingPathComponent("embedded/ml-latest-small-ratings.csv.gz")
    if FileManager.default.contents(atPath: path) != bytes {
      do {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try bytes.write(to: URL(fileURLWithPath: path), options: .atomic)
      } catch {
        throw DatasetError(file: path, .unreadable("cannot write the embedded dataset: \(error.localizedDescription)"))
      }
    }
    return path
  }
}
