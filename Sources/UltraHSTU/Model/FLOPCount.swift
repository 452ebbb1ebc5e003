/// The parts of a model's compute that FLOP counts are split into.
public enum FLOPPart: String, CaseIterable, Codable, Sendable {
  /// Summing the embedding tables of each input token (item, action, position).
  case input
  /// HSTU's fused UVQK projection, SASRec's QKV projection.
  case projection
  /// QKᵀ and AV over the (query, key) pairs the attention mask keeps.
  case attention
  /// The output projection after attention.
  case output
  /// SASRec's two-layer feed-forward block.
  case feedForward
  /// Sampled softmax: each supervised position against its positive and sampled negatives.
  case loss
  /// Inference: scoring the user representation against a set of items.
  case scoring
}

/// FLOPs of one sample, split by part.
public struct FLOPBreakdown: Equatable, Sendable {
  public var parts: [FLOPPart: Double]

  public init(_ parts: [FLOPPart: Double] = [:]) { self.parts = parts }

  /// The FLOPs of `part` (0 when absent).
  public subscript(part: FLOPPart) -> Double { parts[part] ?? 0 }

  /// All parts together.
  public var total: Double { parts.values.reduce(0, +) }

  /// Every part multiplied by `factor` (e.g. `1 / length` for per-token figures).
  public func scaled(by factor: Double) -> FLOPBreakdown { FLOPBreakdown(parts.mapValues { $0 * factor }) }

  /// Part-wise sum: stacks of a truncated or mixture-of-transducers model add up.
  public static func + (a: FLOPBreakdown, b: FLOPBreakdown) -> FLOPBreakdown {
    FLOPBreakdown(a.parts.merging(b.parts, uniquingKeysWith: +))
  }

  /// The mean FLOPs per sample and per token over the sequence `lengths` of a data set, where
  /// `perSample(n)` counts one sample of `n` tokens (each distinct length is counted once).
  public static func average(lengths: [Int], _ perSample: (Int) -> FLOPBreakdown) -> (perSample: FLOPBreakdown, perToken: FLOPBreakdown) {
    precondition(!lengths.isEmpty)
    var samplesOfLength: [Int: Int] = [:]
    for n in lengths { samplesOfLength[n, default: 0] += 1 }
    var sum = FLOPBreakdown()
    for (n, samples) in samplesOfLength { sum = sum + perSample(n).scaled(by: Double(samples)) }
    let tokens = Double(lengths.reduce(0, +))
    return (sum.scaled(by: 1 / Double(lengths.count)), sum.scaled(by: 1 / max(tokens, 1)))
  }
}

/// FLOP accounting for HSTU and SASRec encoders, per sample.
///
/// Conventions:
/// - a multiply-add is 2 FLOPs; only matrix products and the embedding sums are counted (norms,
///   activations, biases, dropout and the relative attention bias are O(length·D) element-wise work
///   and left out);
/// - attention counts only the (query, key) pairs the mask keeps (`AttentionMask.keyCount`);
/// - training = forward + backward = 3 × forward, for every part (exact for the matrix products,
///   which need two products of the same size backward; an upper bound for the embedding sums);
/// - retrieval inference = one forward over the history plus scoring the last position against
///   a set of items, `scoredItems · D · 2`.
///
/// Counting one stack at a time (`input`, `encoder`, `loss`, `scoring`) lets the ULTRA topologies
/// be written as sums: attention truncation is `encoder(layers: N1, length: L, mask: sla)` +
/// `encoder(layers: N2, length: L′)`, a mixture of transducers is one sum per channel.
public enum FLOPCount {
  /// Training costs forward + backward = `trainingFactor` × the forward pass.
  public static let trainingFactor = 3.0

  /// Summing `tables` embeddings per token over `length` tokens: `(tables − 1) · D` additions per
  /// token (the lookups move memory and cost no FLOPs). `nil` means the model's own inputs: item
  /// only for HSTU, item + learned position for SASRec.
  public static func input(model: ModelConfig, length: Int, tables: Int? = nil) -> FLOPBreakdown {
    let tableCount = tables ?? (model.kind == .sasrec ? 2 : 1)
    precondition(tableCount >= 1)
    return FLOPBreakdown([.input: Double(length) * Double(tableCount - 1) * Double(model.embeddingDim)])
  }

  /// Forward FLOPs of `layers` encoder layers (default: all of the model's) over one sequence of
  /// `length` tokens, `targets` of them candidates, under `mask`.
  ///
  /// Per token, HSTU: projection `D·(2·H·dv + 2·H·dqk)·2`, output `H·dv·D·2`; per kept pair,
  /// attention `H·(dqk + dv)·2`. SASRec: projection `3·D·D·2`, output `D·D·2`, feed-forward
  /// `2·D·ffn·2`; per kept pair, attention `2·D·2`.
  public static func encoder(model: ModelConfig, layers: Int? = nil, length: Int, mask: AttentionMask = .causal,
                             targets: Int = 0) -> FLOPBreakdown {
    let layerCount = Double(layers ?? model.layers)
    let tokens = Double(length)
    let pairs = Double(mask.keyCount(length: length, targets: targets))
    let d = Double(model.embeddingDim)
    var perLayer: [FLOPPart: Double]
    switch model.kind {
    case .hstu:
      let h = Double(model.heads), dqk = Double(model.attentionDim), dv = Double(model.linearDim)
      perLayer = [
        .projection: tokens * d * (2 * h * dv + 2 * h * dqk) * 2,
        .attention: pairs * h * (dqk + dv) * 2,
        .output: tokens * h * dv * d * 2,
      ]
    case .sasrec:
      perLayer = [
        .projection: tokens * 3 * d * d * 2,
        .attention: pairs * 2 * d * 2,
        .output: tokens * d * d * 2,
        .feedForward: tokens * 2 * d * Double(model.ffnDim) * 2,
      ]
    }
    return FLOPBreakdown(perLayer).scaled(by: layerCount)
  }

  /// Sampled softmax over `supervisedPositions` positions with `negatives` sampled negatives each:
  /// `(negatives + 1) · D · 2` per position.
  public static func loss(model: ModelConfig, supervisedPositions: Int, negatives: Int) -> FLOPBreakdown {
    FLOPBreakdown([.loss: Double(supervisedPositions) * Double(negatives + 1) * Double(model.embeddingDim) * 2])
  }

  /// Scoring one user representation against `items` items: `items · D · 2`.
  public static func scoring(model: ModelConfig, items: Int) -> FLOPBreakdown {
    FLOPBreakdown([.scoring: Double(items) * Double(model.embeddingDim) * 2])
  }

  /// One forward pass of the whole model (inputs + all layers) over a sequence of `length` tokens.
  public static func forward(model: ModelConfig, length: Int, mask: AttentionMask = .causal, targets: Int = 0,
                             inputTables: Int? = nil) -> FLOPBreakdown {
    input(model: model, length: length, tables: inputTables)
      + encoder(model: model, length: length, mask: mask, targets: targets)
  }

  /// Training FLOPs of a sample whose forward pass (including its loss) costs `forward`.
  public static func training(forward: FLOPBreakdown) -> FLOPBreakdown { forward.scaled(by: trainingFactor) }

  /// Training FLOPs of one sequence of `length` tokens with a sampled-softmax loss on
  /// `supervisedPositions` positions (default: every position predicts its next item).
  public static func training(model: ModelConfig, length: Int, mask: AttentionMask = .causal, negatives: Int,
                              supervisedPositions: Int? = nil, inputTables: Int? = nil) -> FLOPBreakdown {
    training(forward: forward(model: model, length: length, mask: mask, inputTables: inputTables)
      + loss(model: model, supervisedPositions: supervisedPositions ?? length, negatives: negatives))
  }

  /// Retrieval inference FLOPs: one forward pass over a history of `length` tokens, then the last
  /// position scored against `scoredItems` items (the whole catalogue for full retrieval).
  public static func inference(model: ModelConfig, length: Int, mask: AttentionMask = .causal, scoredItems: Int,
                               inputTables: Int? = nil) -> FLOPBreakdown {
    forward(model: model, length: length, mask: mask, inputTables: inputTables) + scoring(model: model, items: scoredItems)
  }
}

// MARK: - Whole models: truncation, action tables, transducer channels

extension FLOPCount {
  /// Forward FLOPs of the model `config` describes over one sequence of `tokens` tokens: all
  /// layers before an attention truncation on the whole sequence with `config.mask`, the rest on
  /// the last `keepLast` tokens; each transducer channel over its own `channelTokens[c]` tokens,
  /// plus the projection that fuses it into every main output row.
  public static func modelForward(config: ModelConfig, tokens n: Int, channelTokens: [Int] = []) -> FLOPBreakdown {
    let before = min(config.truncation?.layersBefore ?? config.layers, config.layers)
    let actionTables = config.input == .itemsOnly ? 0 : config.actionSignals.count
    let baseTables = config.kind == .sasrec ? 2 : 1
    var f = input(model: config, length: n, tables: baseTables + actionTables)
      + encoder(model: config, layers: before, length: n, mask: config.mask)
    if let t = config.truncation, before < config.layers {
      f = f + encoder(model: config, layers: config.layers - before, length: min(n, t.keepLast), mask: t.mask)
    }
    for (c, channel) in config.channels.enumerated() {
      let m = c < channelTokens.count ? channelTokens[c] : 0
      f = f + modelForward(config: channel.model, tokens: m)
        + FLOPBreakdown([.output: Double(outputRows(config: config, tokens: n)) * Double(channel.model.embeddingDim * config.embeddingDim) * 2])
    }
    return f
  }

  /// Output rows of a sequence of `tokens` tokens: all of them, or only those truncation keeps
  /// when it does not supervise the dropped ones.
  public static func outputRows(config: ModelConfig, tokens n: Int) -> Int {
    guard let t = config.truncation, t.layersBefore < config.layers, !t.supervisesDroppedRows else { return n }
    return min(n, t.keepLast)
  }

  /// Rows of a sequence of `tokens` tokens that carry a next-item label: the output rows, half of
  /// them for interleaved input (only action tokens are supervised).
  public static func supervisedRows(config: ModelConfig, tokens n: Int) -> Int {
    let rows = outputRows(config: config, tokens: n)
    return config.input == .interleaved ? rows / 2 : rows
  }

  /// Training FLOPs (forward + backward) of one sequence, sampled-softmax loss included.
  public static func modelTraining(config: ModelConfig, tokens n: Int, channelTokens: [Int] = [], negatives: Int) -> FLOPBreakdown {
    training(forward: modelForward(config: config, tokens: n, channelTokens: channelTokens)
      + loss(model: config, supervisedPositions: supervisedRows(config: config, tokens: n), negatives: negatives))
  }

  /// Inference FLOPs of one retrieval request: encode the history, score all `items` at its last row.
  public static func modelInference(config: ModelConfig, tokens n: Int, channelTokens: [Int] = [], items: Int) -> FLOPBreakdown {
    modelForward(config: config, tokens: n, channelTokens: channelTokens) + scoring(model: config, items: items)
  }
}
