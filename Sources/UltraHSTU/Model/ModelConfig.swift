/// Which sequential encoder a model uses.
public enum ModelKind: String, Codable, Sendable, CaseIterable {
  /// Research HSTU (Zhai et al. 2024): pointwise SiLU attention with relative bias, U-gating.
  case hstu
  /// SASRec: softmax causal self-attention followed by a ReLU feed-forward block.
  case sasrec
}

/// What the HSTU attention weights are divided by.
public enum AttentionNormalizer: Codable, Equatable, Sendable {
  /// A constant, e.g. Meta's padded length 211 (= 200 history + 11 output slots).
  case fixed(Int)
  /// Each sequence's own length.
  case trueLength

  /// The divisor for a sequence of `length` tokens.
  @inline(__always) public func divisor(length: Int) -> Float {
    switch self {
    case .fixed(let n): return Float(n)
    case .trueLength: return Float(max(1, length))
    }
  }
}

/// How events become tokens (spec/ultra-hstu-paper.md §3.1).
public enum InputMode: String, Codable, Sendable, CaseIterable {
  /// One token per event: the item embedding only.
  case itemsOnly = "items-only"
  /// ULTRA-HSTU's action-aware input: one token per event, item + action embeddings summed.
  case actionAware = "action-aware"
  /// HSTU's interleaved form: an item token then an action token per event (2L tokens); the
  /// action token predicts the next item.
  case interleaved
}

/// An action signal of an event, embedded through its own table (heterogeneous action encoding:
/// the embeddings of all configured signals are summed).
public enum ActionSignal: String, Codable, Sendable, CaseIterable {
  /// The explicit rating, bucketed (whole or half stars); bucket 0 = unknown.
  case rating
  /// Log₂-bucketed seconds since the user's previous event; bucket 0 = first event / no timestamps.
  case timeGap = "time-gap"

  /// Rows of the signal's embedding table.
  public var tableRows: Int {
    switch self {
    case .rating: return RatingScale.halfStars.bucketCount + 1
    case .timeGap: return TimeGapBuckets().maxBucket + 1
    }
  }
}

/// Attention truncation (§3.7): after `layersBefore` layers on the whole sequence, only the last
/// `keepLast` tokens of each sequence go through the remaining layers, with `mask`.
public struct AttentionTruncation: Codable, Equatable, Sendable {
  public var layersBefore: Int
  public var keepLast: Int
  public var mask: AttentionMask
  /// The rows truncation drops leave the model with their representation after the first
  /// `layersBefore` layers (an early exit), so every position keeps its next-item loss and the
  /// output has a row per token; kept rows leave after the last layer. Off: only the kept rows are
  /// outputs (TorchEasyRec's semantics, made for ranking targets at the end of the sequence).
  public var supervisesDroppedRows: Bool

  public init(layersBefore: Int, keepLast: Int, mask: AttentionMask = .causal, supervisesDroppedRows: Bool = true) {
    self.layersBefore = layersBefore
    self.keepLast = keepLast
    self.mask = mask
    self.supervisesDroppedRows = supervisesDroppedRows
  }

  enum CodingKeys: String, CodingKey { case layersBefore, keepLast, mask, supervisesDroppedRows }

  /// Decodes a truncation; configurations written before `supervisesDroppedRows` existed output the kept rows only.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    layersBefore = try c.decode(Int.self, forKey: .layersBefore)
    keepLast = try c.decode(Int.self, forKey: .keepLast)
    mask = try c.decode(AttentionMask.self, forKey: .mask)
    supervisesDroppedRows = try c.decodeIfPresent(Bool.self, forKey: .supervisesDroppedRows) ?? false
  }
}

/// Which of a user's events a transducer channel sees.
public enum ChannelFilter: Codable, Equatable, Sendable {
  /// Every event.
  case all
  /// Events rated at least this many stars (e.g. 4: "high ratings", an engagement stream).
  case minimumRating(Float)

  func accepts(_ data: UserSequences, event e: Int) -> Bool {
    switch self {
    case .all: return true
    case .minimumRating(let r): return (data.ratings?[e] ?? 0) >= r
    }
  }
}

/// An extra event stream of a mixture of transducers (§3.8), with its own encoder stack.
public struct TransducerChannel: Codable, Equatable, Sendable {
  public var name: String
  public var filter: ChannelFilter
  public var model: ModelConfig
  /// The channel embeds items with the main stream's item table (when both have the same width)
  /// instead of a table of its own, as TorchEasyRec recommends: fewer parameters, and every
  /// channel's gradient trains the table the loss scores with.
  public var sharesItemEmbedding: Bool

  public init(name: String, filter: ChannelFilter, model: ModelConfig, sharesItemEmbedding: Bool = true) {
    self.name = name
    self.filter = filter
    self.model = model
    self.sharesItemEmbedding = sharesItemEmbedding
  }

  enum CodingKeys: String, CodingKey { case name, filter, model, sharesItemEmbedding }

  /// Decodes a channel; configurations written before `sharesItemEmbedding` existed had their own table.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    name = try c.decode(String.self, forKey: .name)
    filter = try c.decode(ChannelFilter.self, forKey: .filter)
    model = try c.decode(ModelConfig.self, forKey: .model)
    sharesItemEmbedding = try c.decodeIfPresent(Bool.self, forKey: .sharesItemEmbedding) ?? false
  }
}

/// Shape and options of a sequential recommender.
public struct ModelConfig: Codable, Equatable, Sendable {
  public var kind: ModelKind
  /// Item and model width D.
  public var embeddingDim: Int
  public var layers: Int
  public var heads: Int
  /// Query/key width per head (HSTU's d_qk).
  public var attentionDim: Int
  /// Value/gate width per head (HSTU's d_v).
  public var linearDim: Int
  /// SASRec feed-forward width.
  public var ffnDim: Int
  /// Longest history the encoder sees; older events are dropped.
  public var maxSequenceLength: Int
  /// Dropout on the input embeddings.
  public var inputDropout: Float
  /// Dropout before the output projection (HSTU) / in the feed-forward block (SASRec).
  public var linearDropout: Float
  /// Divisor of HSTU's pointwise attention.
  public var normalizer: AttentionNormalizer
  /// Learned relative-position attention bias (rab^p).
  public var positionBias: Bool
  /// Learned log-bucketed time-gap attention bias (rab^t); needs timestamps.
  public var timeBias: Bool
  /// Number of time buckets (the table has `timeBuckets + 1` entries).
  public var timeBuckets: Int
  /// Attention mask of the layers (before truncation, if any).
  public var mask: AttentionMask = .causal
  /// How events become tokens.
  public var input: InputMode = .itemsOnly
  /// Action signals embedded in `actionAware` and `interleaved` input.
  public var actionSignals: [ActionSignal] = [.rating]
  /// Attention truncation, or nil.
  public var truncation: AttentionTruncation? = nil
  /// Selective rematerialisation (§3.6): HSTU layers keep only their input and attention output
  /// for the backward and recompute the normalised input, U, V, Q, K and the gated output.
  public var rematerialize = false
  /// Mixture of transducers: further streams, each encoded by its own stack and fused (projected
  /// and added) into this model's outputs before the loss. Empty: a single transducer.
  public var channels: [TransducerChannel] = []

  public init(kind: ModelKind, embeddingDim: Int, layers: Int, heads: Int, attentionDim: Int, linearDim: Int,
              ffnDim: Int, maxSequenceLength: Int, inputDropout: Float, linearDropout: Float,
              normalizer: AttentionNormalizer, positionBias: Bool, timeBias: Bool, timeBuckets: Int = 128) {
    self.kind = kind
    self.embeddingDim = embeddingDim
    self.layers = layers
    self.heads = heads
    self.attentionDim = attentionDim
    self.linearDim = linearDim
    self.ffnDim = ffnDim
    self.maxSequenceLength = maxSequenceLength
    self.inputDropout = inputDropout
    self.linearDropout = linearDropout
    self.normalizer = normalizer
    self.positionBias = positionBias
    self.timeBias = timeBias
    self.timeBuckets = timeBuckets
  }

  /// Tokens per sequence the encoder may see: twice the events for interleaved input.
  public var maxTokens: Int { input == .interleaved ? 2 * maxSequenceLength : maxSequenceLength }
}

/// Optimisation, loss and schedule settings.
public struct TrainConfig: Codable, Equatable, Sendable {
  /// Uniformly sampled negatives per supervised position.
  public var negatives: Int = 128
  /// Softmax temperature applied to cosine similarities.
  public var temperature: Float = 0.05
  public var learningRate: Float = 1e-3
  public var beta1: Float = 0.9
  public var beta2: Float = 0.98
  public var weightDecay: Float = 0
  public var epsilon: Float = 1e-8
  /// Users per batch.
  public var batchSize: Int = 128
  /// Maximum number of epochs.
  public var epochs: Int = 101
  /// Stop after this many epochs without a better validation NDCG@10 (0 = never stop early).
  public var patience: Int = 20
  public var seed: UInt64 = 42
  /// Stochastic length (HSTU §2.4): α ∈ (1, 2], or nil for none. Long training windows are cut
  /// to their ⌊N^{α/2}⌋ most recent events with probability 1 − N^α/n².
  public var stochasticLengthAlpha: Double? = nil
  /// Load-balanced batches: a token budget per batch instead of `batchSize` users (nil: users).
  public var tokenBudget: Int? = nil

  public init() {}

  /// Equal in everything but the schedule's length (`epochs`, `patience`), which a resumed run may extend.
  public func sameRecipe(as other: TrainConfig) -> Bool {
    var a = self, b = other
    a.epochs = 0; a.patience = 0; b.epochs = 0; b.patience = 0
    return a == b
  }
}

/// A named model + training recipe.
public struct Preset: Sendable {
  public var name: String
  public var summary: String
  public var model: ModelConfig
  public var train: TrainConfig

  /// Presets matching the published MovieLens-1M configurations (anchors.md §1.6).
  public static let all: [Preset] = [sasrec, hstu, hstuLarge, ultraHSTU, ultraHSTULarge]

  public static func named(_ name: String) -> Preset? { all.first { $0.name == name } }

  /// ML-1M SASRec: 2 blocks, 1 head, D = 50, sampled softmax.
  public static let sasrec = Preset(
    name: "sasrec", summary: "SASRec, 2 blocks, 1 head, d=50 (published ML-1M baseline)",
    model: ModelConfig(kind: .sasrec, embeddingDim: 50, layers: 2, heads: 1, attentionDim: 50, linearDim: 50,
                       ffnDim: 50, maxSequenceLength: 200, inputDropout: 0.2, linearDropout: 0.2,
                       normalizer: .fixed(211), positionBias: false, timeBias: false),
    train: TrainConfig())

  /// ML-1M HSTU: 2 blocks, 1 head, d_qk = d_v = 50.
  public static let hstu = Preset(
    name: "hstu", summary: "HSTU, 2 blocks, 1 head, d=50, dqk=dv=50 (published ML-1M config)",
    model: ModelConfig(kind: .hstu, embeddingDim: 50, layers: 2, heads: 1, attentionDim: 50, linearDim: 50,
                       ffnDim: 0, maxSequenceLength: 200, inputDropout: 0.2, linearDropout: 0.2,
                       normalizer: .fixed(211), positionBias: true, timeBias: false),
    train: TrainConfig())

  /// ML-1M HSTU-large: 8 blocks, 2 heads, d_qk = d_v = 25.
  public static let hstuLarge = Preset(
    name: "hstu-large", summary: "HSTU-large, 8 blocks, 2 heads, d=50, dqk=dv=25 (published ML-1M config)",
    model: ModelConfig(kind: .hstu, embeddingDim: 50, layers: 8, heads: 2, attentionDim: 25, linearDim: 25,
                       ffnDim: 0, maxSequenceLength: 200, inputDropout: 0.2, linearDropout: 0.2,
                       normalizer: .fixed(211), positionBias: true, timeBias: false),
    train: TrainConfig())

  /// ML-1M ULTRA-HSTU: hstu-large's width and depth with action-aware input (rating + time-gap
  /// signals), semi-local attention in the first 6 layers, attention truncation to the latest 100
  /// tokens for the last 2, and a mixture of transducers with a one-layer high-rating (≥ 4 stars)
  /// engagement stream that shares the item table.
  public static let ultraHSTU = Preset(
    name: "ultra-hstu", summary: "ULTRA-HSTU for ML-1M: hstu-large + action-aware input, SLA, truncation, high-rating transducer",
    model: ultra(embeddingDim: 50, heads: 2, headDim: 25, layersBefore: 6, layersAfter: 2, channelLayers: 1),
    train: TrainConfig())

  /// A deeper and wider ULTRA-HSTU for ML-1M.
  public static let ultraHSTULarge = Preset(
    name: "ultra-hstu-large", summary: "ULTRA-HSTU-large for ML-1M: d=64, 6+4 layers, high-rating transducer of 3 layers",
    model: ultra(embeddingDim: 64, heads: 2, headDim: 32, layersBefore: 6, layersAfter: 4, channelLayers: 3),
    train: TrainConfig())

  static func ultra(embeddingDim d: Int, heads: Int, headDim: Int, layersBefore: Int, layersAfter: Int,
                    channelLayers: Int) -> ModelConfig {
    var m = ModelConfig(kind: .hstu, embeddingDim: d, layers: layersBefore + layersAfter, heads: heads,
                        attentionDim: headDim, linearDim: headDim, ffnDim: 0, maxSequenceLength: 200,
                        inputDropout: 0.2, linearDropout: 0.2, normalizer: .fixed(211), positionBias: true, timeBias: true)
    m.input = .actionAware
    m.actionSignals = [.rating, .timeGap]
    m.mask = .semiLocalMeta(k1: 64, k2: 32)
    m.truncation = AttentionTruncation(layersBefore: layersBefore, keepLast: 100)
    var high = m
    high.layers = channelLayers
    high.mask = .causal
    high.truncation = nil
    m.channels = [TransducerChannel(name: "high-ratings", filter: .minimumRating(4), model: high)]
    return m
  }
}
