/// Parses one interaction file of a known format into an `InteractionLog`, reading bytes in large
/// chunks and numbers by hand.
enum DatasetParser {
  /// What the columns after `user, item` hold.
  struct Columns: Equatable {
    var count: Int
    var rating: Bool
    var timestamp: Bool
    var sequencePosition: Bool

    /// Generic csv: `user,item[,rating][,timestamp]` by field count.
    static func positional(_ count: Int) -> Columns {
      Columns(count: count, rating: count >= 3, timestamp: count == 4, sequencePosition: false)
    }
  }

  /// How a concrete format lays out its lines.
  struct Layout {
    var separator: FieldSeparator
    /// Column names of the header line, nil when the format has no header (`csv` accepts any header).
    var header: [String]?
    var allowsHeader: Bool
    /// Fixed columns, or nil when the first data line decides (`csv`).
    var columns: Columns?

    init(_ format: DatasetFormat, firstLine: UnsafeBufferPointer<UInt8>) {
      let ratedAndTimed = Columns(count: 4, rating: true, timestamp: true, sequencePosition: false)
      switch format {
      case .movielensDat:
        self.init(separator: .doubleColon, header: nil, allowsHeader: false, columns: ratedAndTimed)
      case .movielensSeqTSV:
        let columns = Columns(count: 4, rating: true, timestamp: false, sequencePosition: true)
        self.init(separator: .byte(FieldParsing.tab), header: DatasetFormat.seqTSVHeader, allowsHeader: true,
                  columns: columns)
      case .ml100k:
        self.init(separator: .whitespace, header: nil, allowsHeader: false, columns: ratedAndTimed)
      case .movielensCSV:
        self.init(separator: .byte(FieldParsing.comma), header: DatasetFormat.movielensCSVHeader,
                  allowsHeader: true, columns: ratedAndTimed)
      case .userItem:
        self.init(separator: .whitespace, header: nil, allowsHeader: false, columns: .positional(2))
      case .csv, .auto:
        let separator = firstLine.contains(FieldParsing.tab) ? FieldParsing.tab : FieldParsing.comma
        self.init(separator: .byte(separator), header: nil, allowsHeader: true, columns: nil)
      }
    }

    init(separator: FieldSeparator, header: [String]?, allowsHeader: Bool, columns: Columns?) {
      self.separator = separator
      self.header = header
      self.allowsHeader = allowsHeader
      self.columns = columns
    }
  }

  /// Reads `path` as `format` (which must not be `.auto`).
  static func parse(path: String, format: DatasetFormat) throws -> InteractionLog {
    let reader = try LineReader(path: path)
    var users: [Int64] = []
    var items: [Int64] = []
    var ratings: [Float] = []
    var times: [Int64] = []
    var layout: Layout? = nil
    var fields: [Range<Int>] = []
    fields.reserveCapacity(8)

    while let line = try reader.nextLine() {
      if FieldParsing.isBlankLine(line) { continue }
      let number = reader.lineNumber
      func fail(_ kind: DatasetError.Kind) -> DatasetError { DatasetError(file: path, line: number, kind) }

      if layout == nil {
        let first = Layout(format, firstLine: line)
        layout = first
        FieldParsing.split(line, by: first.separator, into: &fields)
        if first.allowsHeader, FieldParsing.integer(line, fields[0]) == nil {
          let found = fields.map { FieldParsing.text(line, FieldParsing.trimmed(line, $0)) }
          if let expected = first.header, found != expected {
            throw fail(.badHeader(expected: expected.joined(separator: ","), found: found.joined(separator: ",")))
          }
          continue
        }
      }
      guard var current = layout else { continue }
      FieldParsing.split(line, by: current.separator, into: &fields)
      if current.columns == nil {
        guard (2...4).contains(fields.count) else { throw fail(.wrongFieldCount(expected: "2 to 4", found: fields.count)) }
        current.columns = .positional(fields.count)
        layout = current
      }
      guard let columns = current.columns else { continue }
      guard fields.count == columns.count else {
        throw fail(.wrongFieldCount(expected: String(columns.count), found: fields.count))
      }

      guard let user = FieldParsing.nonNegativeInteger(line, fields[0]) else {
        throw fail(.nonNumericID(column: "user id", text: FieldParsing.text(line, fields[0])))
      }
      guard let item = FieldParsing.nonNegativeInteger(line, fields[1]) else {
        throw fail(.nonNumericID(column: "item id", text: FieldParsing.text(line, fields[1])))
      }
      users.append(user)
      items.append(item)
      if columns.rating {
        guard let rating = FieldParsing.decimal(line, fields[2]) else {
          throw fail(.badRating(FieldParsing.text(line, fields[2])))
        }
        ratings.append(Float(rating))
      }
      if columns.timestamp {
        guard let time = FieldParsing.integer(line, fields[3]) else {
          throw fail(.badTimestamp(FieldParsing.text(line, fields[3])))
        }
        times.append(time)
      } else if columns.sequencePosition {
        guard let position = FieldParsing.nonNegativeInteger(line, fields[3]) else {
          throw fail(.badSequencePosition(FieldParsing.text(line, fields[3])))
        }
        times.append(position)
      }
    }

    guard let columns = layout?.columns, !users.isEmpty else { throw DatasetError(file: path, .empty) }
    return InteractionLog(
      userIDs: users, itemIDs: items,
      ratings: columns.rating ? ratings : nil,
      timestamps: columns.timestamp ? times : nil,
      sequencePositions: columns.sequencePosition ? times : nil)
  }
}
