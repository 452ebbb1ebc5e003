import Foundation

/// Datasets shipped inside the package as resources.
public enum EmbeddedDataset {
  /// Path of MovieLens ml-latest-small (October 2016: 671 users, 9,066 items, 100,004 ratings)
  /// `ratings.csv.gz`, or nil when the resource bundle cannot be found.
  public static var mlLatestSmallRatingsPath: String? {
    Bundle.module.path(forResource: "ratings.csv", ofType: "gz", inDirectory: "ml-latest-small")
  }
}
