/// The interaction file formats `DatasetLoader` reads. Raw values are the names used on the command line.
public enum DatasetFormat: String, CaseIterable, Sendable {
  /// Detect the format from the file name and first line (see `detect(fileName:firstLine:)`).
  case auto
  /// MovieLens-1M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`, no header.
  case movielensDat = "ml-dat"
  /// `user_id\tmovie_id\trating\tseq_pos` with that header; events ordered by `seq_pos`, no timestamps.
  case movielensSeqTSV = "ml-seq-tsv"
  /// MovieLens-100K `u.data`: `user\titem\trating\ttimestamp`, no header.
  case ml100k = "ml-100k"
  /// MovieLens `ratings.csv`: header `userId,movieId,rating,timestamp`, half-star ratings.
  case movielensCSV = "ml-csv"
  /// Whitespace-separated `user item` lines in chronological file order (BERT4Rec's `beauty.txt`).
  case userItem = "user-item"
  /// Generic `user,item[,rating][,timestamp]`, comma- or tab-separated, positional columns, with an
  /// optional header line (recognised by a non-numeric first field).
  case csv

  /// The format named `name` (a raw value).
  public static func named(_ name: String) throws -> DatasetFormat {
    guard let format = DatasetFormat(rawValue: name) else { throw DatasetError(file: nil, .unknownFormat(name)) }
    return format
  }

  /// The format of a file called `fileName` (a `.gz` suffix is ignored) whose first non-blank line is
  /// `firstLine`, or nil when nothing fits. Rules, first match wins:
  /// `::` in the line or a `.dat` name → ml-dat; the header `user_id\tmovie_id\trating\tseq_pos` →
  /// ml-seq-tsv; a line starting `userId,movieId` → ml-csv; the name `u.data` → ml-100k; exactly two
  /// whitespace-separated integers → user-item; two to four comma- or tab-separated fields → csv.
  public static func detect(fileName: String, firstLine: String) -> DatasetFormat? {
    var name = Substring(fileName.split(separator: "/").last ?? "")
    if name.hasSuffix(".gz") { name = name.dropLast(3) }
    let line = firstLine.hasSuffix("\r") ? String(firstLine.dropLast()) : firstLine
    if line.contains("::") || name.hasSuffix(".dat") { return .movielensDat }
    if line == seqTSVHeader.joined(separator: "\t") { return .movielensSeqTSV }
    if line.hasPrefix("userId,movieId") { return .movielensCSV }
    if name == "u.data" { return .ml100k }
    let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
    if words.count == 2, words.allSatisfy({ Int64($0) != nil }) { return .userItem }
    let separator: Character = line.contains("\t") ? "\t" : ","
    let fields = line.split(separator: separator, omittingEmptySubsequences: false).count
    if (2...4).contains(fields) { return .csv }
    return nil
  }

  static let seqTSVHeader = ["user_id", "movie_id", "rating", "seq_pos"]
  static let movielensCSVHeader = ["userId", "movieId", "rating", "timestamp"]
}
