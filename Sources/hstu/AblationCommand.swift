import ArgumentParser
import Foundation
import UltraHSTU

/// The ULTRA-HSTU ablation ladder, built on the `hstu` preset: each step adds one component; then
/// the same components on `hstu-large` and the ULTRA presets.
func ablationConfigurations() -> [(name: String, model: ModelConfig)] {
  let base = Preset.hstu.model
  var interleaved = base
  interleaved.input = .interleaved
  interleaved.actionSignals = [.rating, .timeGap]
  var actionAware = base
  actionAware.input = .actionAware
  actionAware.actionSignals = [.rating, .timeGap]
  func sla(_ mask: AttentionMask) -> ModelConfig { var m = actionAware; m.mask = mask; return m }
  var truncated = sla(.semiLocalMeta(k1: 64, k2: 32))
  truncated.layers = 3
  truncated.truncation = AttentionTruncation(layersBefore: 2, keepLast: 100)
  var mot = truncated
  var high = actionAware
  high.layers = 1
  mot.channels = [TransducerChannel(name: "high-ratings", filter: .minimumRating(4), model: high)]
  var large = Preset.hstuLarge.model
  large.input = .actionAware
  large.actionSignals = [.rating, .timeGap]
  var largeSLA = large
  largeSLA.mask = .semiLocalMeta(k1: 64, k2: 32)
  var largeTruncated = largeSLA
  largeTruncated.truncation = AttentionTruncation(layersBefore: 6, keepLast: 100)
  return [
    ("hstu-interleaved-actions", interleaved),
    ("hstu-ids-only", base),
    ("+action-aware", actionAware),
    ("+sla-meta-k1=32-k2=16", sla(.semiLocalMeta(k1: 32, k2: 16))),
    ("+sla-meta-k1=64-k2=32", sla(.semiLocalMeta(k1: 64, k2: 32))),
    ("+sla-prefix-k1=32-k2=16", sla(.semiLocalPrefix(k1: 32, k2: 16))),
    ("+sla-prefix-k1=64-k2=32", sla(.semiLocalPrefix(k1: 64, k2: 32))),
    ("+truncation", truncated),
    ("+mot", mot),
    ("hstu-large", Preset.hstuLarge.model),
    ("hstu-large+action-aware", large),
    ("hstu-large+action-aware+sla-meta-k1=64-k2=32", largeSLA),
    ("hstu-large+action-aware+sla+truncation", largeTruncated),
    ("ultra-hstu", Preset.ultraHSTU.model),
    ("ultra-hstu-large", Preset.ultraHSTULarge.model),
  ]
}

struct Ablation: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train the ULTRA-HSTU ablation ladder on a dataset; rows are added to bench/results/ultra-ablation.json.")

  @Option(help: "Interaction log (default: the embedded ml-latest-small).")
  var data: String?

  @Option(help: "Dataset name written in each row.")
  var name = "ml-latest-small"

  @Option(help: "Comma-separated configuration names (default: all).")
  var configs: String?

  @Option(help: "Maximum epochs per configuration.")
  var epochs = 30

  @Option(help: "Early-stopping patience in epochs.")
  var patience = 8

  @OptionGroup var deviceOption: DeviceOption

  @Option(help: "Seed of initialisation, batches, dropout and negatives (rows of other seeds are kept beside).")
  var seed: UInt64 = TrainConfig().seed

  @Option(help: "Output JSON (a Markdown table is written beside it).")
  var output = "bench/results/ultra-ablation.json"

  @Option(help: "Instead of training, add the rows of this JSON (e.g. a run made elsewhere) to --output.")
  var mergeFrom: String?

  func run() throws {
    if let mergeFrom {
      guard let data = FileManager.default.contents(atPath: mergeFrom),
            let rows = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
        throw ValidationError("\(mergeFrom) is not a JSON array of ablation rows")
      }
      for row in rows { try upsert(row) }
      return
    }
    let all = ablationConfigurations()
    let chosen = configs.map { $0.split(separator: ",").map(String.init) } ?? all.map(\.name)
    for c in chosen where !all.contains(where: { $0.name == c }) {
      throw ValidationError("unknown configuration \(c); known: \(all.map(\.name).joined(separator: ", "))")
    }
    let path = try data ?? EmbeddedDataset.mlLatestSmallRatingsPath()
    let sequences = try DatasetLoader.load(path: path)
    let info = RunInfo.current()
    for (configName, model) in all where chosen.contains(configName) {
      var train = TrainConfig()
      train.epochs = epochs
      train.patience = patience
      train.seed = seed
      let built = makeModel(config: model, data: sequences, seed: train.seed)
      let trainer = Trainer(model: built, train: train, data: sequences, presetName: configName, datasetName: name)
      let engine = try deviceOption.engine(model: built, train: train)
      trainer.engine = engine
      FileHandle.standardError.write("== \(name) / \(configName)\n".data(using: .utf8)!)
      try trainer.run()
      let report = TrainingReport(trainer: trainer)
      var row: [String: Any] = ["dataset": name, "config": configName, "epochs": report.epochs, "best_epoch": report.bestEpoch,
                                "max_epochs": epochs, "train_flops_per_sample": report.trainFLOPsPerSample,
                                "inference_flops_per_sample": report.inferenceFLOPsPerSample,
                                "wall_seconds": report.wallSeconds, "train_tokens_per_second": report.trainTokensPerSecond,
                                "date": info.date, "commit": info.commit, "machine": info.machine, "seed": Int(seed),
                                "device": (engine as? CUDAEngine)?.gpu.device.name ?? "cpu"]
      for key in ["HR@10", "NDCG@10", "HR@50", "HR@200", "NDCG@200", "MRR"] { row[key] = report.test[key] ?? 0 }
      try upsert(row)
    }
  }

  /// Replaces the row of the same dataset, configuration and seed (or appends it), then rewrites the table.
  func upsert(_ row: [String: Any]) throws {
    var rows = (FileManager.default.contents(atPath: output)
      .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [[String: Any]] }) ?? []
    let defaultSeed = Int(TrainConfig().seed)
    let key = { (r: [String: Any]) in "\(r["dataset"] ?? "")/\(r["config"] ?? "")/\(r["seed"] as? Int ?? defaultSeed)" }
    rows.removeAll { key($0) == key(row) }
    rows.append(row)
    let order = ablationConfigurations().map(\.name)
    let rank = { (r: [String: Any]) in
      (r["dataset"] as? String ?? "", order.firstIndex(of: r["config"] as? String ?? "") ?? 99, r["seed"] as? Int ?? defaultSeed)
    }
    rows.sort { rank($0) < rank($1) }
    try writeAtomically(JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys]), to: output)
    var md = "| dataset | config | seed | HR@10 | NDCG@10 | HR@200 | MRR | train GFLOP/sample | inference GFLOP/sample | epochs (best) | wall s | device | commit |\n"
    md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    for r in rows {
      let f = { (k: String) in String(format: "%.4f", r[k] as? Double ?? 0) }
      let g = { (k: String) in String(format: "%.4f", (r[k] as? Double ?? 0) / 1e9) }
      md += "| \(r["dataset"]!) | \(r["config"]!) | \(r["seed"] as? Int ?? defaultSeed) | \(f("HR@10")) | \(f("NDCG@10")) | \(f("HR@200")) | \(f("MRR")) | \(g("train_flops_per_sample")) | \(g("inference_flops_per_sample")) | \(r["epochs"]!) (\(r["best_epoch"]!)) / \(r["max_epochs"]!) | \(String(format: "%.0f", r["wall_seconds"] as? Double ?? 0)) | \(r["device"] as? String ?? "cpu") | \(r["commit"]!) |\n"
    }
    md += targetSummary(rows)
    try writeAtomically(Data(md.utf8), to: (output as NSString).deletingPathExtension + ".md")
  }

  /// The issue's target, from the rows: per dataset, `ultra-hstu` against `hstu-large` (means over
  /// the seeds both have), and on ml-1m the gaps to the published HSTU-large and to the stretch target.
  func targetSummary(_ rows: [[String: Any]]) -> String {
    var out = ""
    for dataset in Set(rows.compactMap { $0["dataset"] as? String }).sorted() {
      func runs(_ config: String) -> [[String: Any]] {
        rows.filter { $0["dataset"] as? String == dataset && $0["config"] as? String == config }
      }
      let ultra = runs("ultra-hstu"), large = runs("hstu-large")
      guard !ultra.isEmpty, !large.isEmpty else { continue }
      func mean(_ rs: [[String: Any]], _ key: String) -> Double { rs.map { $0[key] as? Double ?? 0 }.reduce(0, +) / Double(rs.count) }
      func range(_ rs: [[String: Any]], _ key: String) -> String {
        let v = rs.map { $0[key] as? Double ?? 0 }
        return String(format: "%.4f–%.4f", v.min()!, v.max()!)
      }
      let (hr, ndcg, flops) = (mean(ultra, "HR@10"), mean(ultra, "NDCG@10"), mean(ultra, "train_flops_per_sample"))
      let (largeHR, largeNDCG, largeFLOPs) = (mean(large, "HR@10"), mean(large, "NDCG@10"), mean(large, "train_flops_per_sample"))
      let seeds = { (rs: [[String: Any]]) in rs.map { String($0["seed"] as? Int ?? 42) }.joined(separator: ", ") }
      out += "\n### Target on \(dataset)\n\n"
      out += String(format: "- ultra-hstu (seeds %@): mean HR@10 %.4f (%@), NDCG@10 %.4f (%@) at %.1f MFLOP per training sample\n",
                    seeds(ultra), hr, range(ultra, "HR@10"), ndcg, range(ultra, "NDCG@10"), flops / 1e6)
      out += String(format: "- hstu-large (seeds %@): mean HR@10 %.4f (%@), NDCG@10 %.4f (%@) at %.1f MFLOP per training sample\n",
                    seeds(large), largeHR, range(large, "HR@10"), largeNDCG, range(large, "NDCG@10"), largeFLOPs / 1e6)
      out += String(format: "- ultra-hstu − hstu-large: HR@10 %+.4f, NDCG@10 %+.4f, training FLOPs %+.1f %%\n",
                    hr - largeHR, ndcg - largeNDCG, 100 * (flops / largeFLOPs - 1))
      if dataset == "ml-1m", let published = publishedML1M["hstu-large"] {
        out += String(format: "- against the published HSTU-large (HR@10 %.4f, NDCG@10 %.4f): %+.4f, %+.4f; against the stretch target (0.345, 0.200): %+.4f, %+.4f\n",
                      published["HR@10"]!, published["NDCG@10"]!, hr - published["HR@10"]!, ndcg - published["NDCG@10"]!,
                      hr - 0.345, ndcg - 0.200)
      }
    }
    return out
  }
}
