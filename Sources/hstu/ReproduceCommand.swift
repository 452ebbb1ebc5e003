import ArgumentParser
import Foundation
import UltraHSTU

/// Published ML-1M numbers (generative-recommenders README, anchors.md §1.9).
let publishedML1M: [String: [String: Double]] = [
  "sasrec": ["HR@10": 0.2853, "NDCG@10": 0.1603, "HR@50": 0.5474, "NDCG@50": 0.2185, "HR@200": 0.7528, "NDCG@200": 0.2498],
  "hstu": ["HR@10": 0.3097, "NDCG@10": 0.1720, "HR@50": 0.5754, "NDCG@50": 0.2307, "HR@200": 0.7716, "NDCG@200": 0.2606],
  "hstu-large": ["HR@10": 0.3294, "NDCG@10": 0.1893, "HR@50": 0.5935, "NDCG@50": 0.2481, "HR@200": 0.7839, "NDCG@200": 0.2771],
]

struct Reproduce: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train the ML-1M presets and write validation-selected test metrics next to the published ones.")

  @Option(help: "MovieLens-1M ratings (ratings.dat or the ratings_seq.tsv variant).")
  var data = "../shared/data/ml-1m/ratings_seq.tsv.gz"

  @OptionGroup var deviceOption: DeviceOption

  @Option(help: "Comma-separated presets (empty: only rewrite the notes and the table from the JSON).")
  var presets = "sasrec,hstu,hstu-large"

  @Option(help: "Maximum epochs per preset (default: each preset's own, 101).")
  var epochs: Int?

  @Option(help: "Where to write the JSON (a Markdown table is written beside it).")
  var output = "bench/results/ml-1m.json"

  func run() throws {
    // Rows of other presets already in the file are kept, so presets can be run one at a time.
    let names = presets.split(separator: ",").map(String.init)
    var rows = (FileManager.default.contents(atPath: output)
      .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [[String: Any]] } ?? [])
      .filter { !names.contains($0["preset"] as? String ?? "") }
    if names.isEmpty { return try write(rows) }
    let data = try DatasetLoader.load(path: data)
    let info = RunInfo.current()
    for name in names {
      guard let preset = Preset.named(name) else { throw ValidationError("unknown preset \(name)") }
      var train = preset.train
      if let epochs { train.epochs = epochs }
      let model = makeModel(config: preset.model, data: data, seed: train.seed)
      let trainer = Trainer(model: model, train: train, data: data, presetName: name, datasetName: "ml-1m")
      trainer.engine = try deviceOption.engine(model: model, train: train)
      FileHandle.standardError.write("== \(name): up to \(train.epochs) epochs\n".data(using: .utf8)!)
      let state = try trainer.run()
      let report = TrainingReport(trainer: trainer)
      var row: [String: Any] = ["preset": name, "epochs": report.epochs, "best_epoch": report.bestEpoch,
                                "max_epochs": train.epochs, "early_stopped": state.stopped,
                                "wall_seconds": report.wallSeconds, "train_tokens_per_second": report.trainTokensPerSecond,
                                "train_flops_per_token": report.trainFLOPsPerToken, "commit": info.commit,
                                "date": info.date, "machine": info.machine, "device": deviceOption.device]
      for key in ["HR@10", "NDCG@10", "HR@50", "NDCG@50", "HR@200", "NDCG@200", "MRR"] { row[key] = report.test[key] ?? 0 }
      if let published = publishedML1M[name] {
        let gap = published.reduce(into: [String: Double]()) { $0[$1.key] = (report.test[$1.key] ?? 0) - $1.value }
        row["published"] = published
        row["gap_vs_published"] = gap
      }
      rows.append(row)
      let order = { (row: [String: Any]) in Preset.all.firstIndex { $0.name == row["preset"] as? String } ?? Int.max }
      rows.sort { order($0) < order($1) }
      try write(rows)  // keep partial results if a later preset is interrupted
    }
  }

  /// What a row's figures mean next to the published ones, from facts of this run and this data.
  func note(preset: String, gap: [String: Double], epochs: Int, maxEpochs: Int, stopped: Bool) -> String {
    let below = ["HR@10", "NDCG@10"].filter { (gap[$0] ?? 0) < 0 }
    var parts: [String] = []
    if below.isEmpty {
      parts.append("at or above the published HR@10 and NDCG@10")
    } else {
      parts.append("below the published " + below.map { String(format: "%@ by %.4f", $0, -(gap[$0] ?? 0)) }.joined(separator: " and "))
      if Preset.named(preset)?.model.kind == .hstu {
        parts.append("this ML-1M copy has no timestamps, so the time bias rab^t that the published HSTU runs learn is off")
      }
      parts.append("training here holds out the validation event of every user, which the published runs train on (no validation split, ignore_last_n = 1)")
      if !stopped && maxEpochs < 101 { parts.append("trained \(epochs) of the published 101 epochs (epoch cap)") }
    }
    if stopped { parts.append("stopped early after \(epochs) epochs (no better validation NDCG@10 for the patience window)") }
    parts.append("test metrics of the epoch with the best validation NDCG@10; items ranked among the 3,706 rated movies")
    return parts.joined(separator: "; ")
  }

  func write(_ rows: [[String: Any]]) throws {
    let rows = rows.map { row -> [String: Any] in
      guard let gap = row["gap_vs_published"] as? [String: Double] else { return row }
      var r = row
      r["note"] = note(preset: row["preset"] as? String ?? "", gap: gap, epochs: row["epochs"] as? Int ?? 0, maxEpochs: row["max_epochs"] as? Int ?? 101,
                       stopped: row["early_stopped"] as? Bool ?? false)
      return r
    }
    let json = try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys])
    try writeAtomically(json, to: output)
    var md = "| preset | HR@10 | NDCG@10 | HR@50 | NDCG@50 | HR@200 | NDCG@200 | MRR | epochs (best) | wall s | tokens/s | train FLOPs/token | commit |\n"
    md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    for r in rows {
      let f: (String) -> String = { String(format: "%.4f", r[$0] as? Double ?? 0) }
      let gap: (String) -> String = { k in
        guard let g = (r["gap_vs_published"] as? [String: Double])?[k] else { return "" }
        return String(format: " (%+.4f)", g)
      }
      md += "| \(r["preset"]!) | \(f("HR@10"))\(gap("HR@10")) | \(f("NDCG@10"))\(gap("NDCG@10")) | \(f("HR@50")) | \(f("NDCG@50")) | \(f("HR@200")) | \(f("NDCG@200")) | \(f("MRR")) | \(r["epochs"]!) (\(r["best_epoch"]!)) | \(String(format: "%.0f", r["wall_seconds"] as? Double ?? 0)) | \(String(format: "%.0f", r["train_tokens_per_second"] as? Double ?? 0)) | \(String(format: "%.0f", r["train_flops_per_token"] as? Double ?? 0)) | \(r["commit"] ?? "") |\n"
    }
    md += "\nParentheses: difference to the published value. Machine and date of each row, and why a row differs, are in the JSON (`machine`, `date`, `note`).\n"
    for r in rows { md += "\n- **\(r["preset"] ?? "")** (\(r["date"] ?? ""), \(r["machine"] ?? "")): \(r["note"] ?? "")\n" }
    try writeAtomically(Data(md.utf8), to: (output as NSString).deletingPathExtension + ".md")
  }
}
