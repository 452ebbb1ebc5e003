import Foundation

/// A layer of the encoder stack: transforms the running activations in place and back.
protocol EncoderLayer: AnyObject {
  func forward(_ x: UnsafeMutablePointer<Float>, _ p: ParameterStore, _ c: ForwardContext)
  func backward(_ dx: UnsafeMutablePointer<Float>, _ p: ParameterStore, _ c: ForwardContext)
}

extension HSTULayer: EncoderLayer {}
extension SASRecLayer: EncoderLayer {}

/// The encoder's output for a batch: one row per token that reached the last layer.
public struct EncodedBatch {
  /// `[rows, D]` output embeddings, valid until the next forward.
  public var output: UnsafeMutablePointer<Float>
  public var rows: Int
  /// `batch + 1` offsets of the output rows per sequence (fewer rows than tokens after truncation).
  public var offsets: UnsafePointer<Int>
  /// The batch token each output row belongs to.
  public var tokenIndex: UnsafePointer<Int32>
}

/// A sequential recommender: item (+ action) + position embeddings, an encoder stack (HSTU or
/// SASRec) with an optional attention truncation, and per-token output embeddings that score the
/// next item by cosine similarity.
public final class SequentialModel {
  public let config: ModelConfig
  /// Items are `1...itemCount`; row 0 of the item table is padding / the interleaved action token.
  public let itemCount: Int
  public let parameters: ParameterStore
  let itemEmbedding, positionEmbedding: ParameterEntry
  let actionEmbeddings: [ParameterEntry]
  let finalGamma, finalBeta: ParameterEntry?
  let layers: [EncoderLayer]

  let embedded = HostBuffer(), hidden = HostBuffer(), truncated = HostBuffer(), composed = HostBuffer()
  let dTruncated = HostBuffer()
  let finalMean = HostBuffer(), finalRstd = HostBuffer(), output = HostBuffer(), dHidden = HostBuffer()
  let offsets = HostArray<Int>(), items = HostArray<Int32>(), positions = HostArray<Int32>(), actions = HostArray<Int32>()
  let timeBuckets = HostArray<UInt8>(), bucketOffsets = HostArray<Int>()
  let keptOffsets = HostArray<Int>(), keptRows = HostArray<Int32>(), keptTimeBuckets = HostArray<UInt8>()
  /// 0, 1, …, T − 1: the batch token of each output row when every token is an output.
  let allTokens = HostArray<Int32>()
  /// What the last forward fed the final LayerNorm (or copied to the output).
  private var encoderOutput: UnsafeMutablePointer<Float>?
  let keptBucketOffsets = HostArray<Int>()
  private var fullContext: ForwardContext?, keptContext: ForwardContext?

  /// A model with its own parameters, initialised from `seed`.
  public convenience init(config: ModelConfig, itemCount: Int, seed: UInt64) {
    let store = ParameterStore()
    self.init(config: config, itemCount: itemCount, parameters: store, prefix: "")
    store.allocate(seed: seed)
  }

  /// Declares this model's tensors in `parameters` under `prefix` (the owner allocates them);
  /// with `sharedItemEmbedding` (an `[itemCount + 1, D]` entry of `parameters`) the model reads
  /// and trains that item table instead of declaring its own.
  public init(config: ModelConfig, itemCount: Int, parameters: ParameterStore, prefix: String,
              sharedItemEmbedding: ParameterEntry? = nil) {
    self.config = config
    self.itemCount = itemCount
    self.parameters = parameters
    let d = config.embeddingDim
    precondition(sharedItemEmbedding.map { $0.shape == [itemCount + 1, d] } ?? true, "shared item table of another shape")
    itemEmbedding = sharedItemEmbedding
      ?? parameters.declare(prefix + "item_embedding", [itemCount + 1, d], .truncatedNormal(std: 0.02))
    positionEmbedding = parameters.declare(prefix + "position_embedding", [config.maxTokens, d],
                                           .xavierNormal(fanIn: config.maxTokens, fanOut: d))
    actionEmbeddings = config.input == .itemsOnly ? [] : config.actionSignals.map {
      parameters.declare(prefix + "action_embedding.\($0.rawValue)", [$0.tableRows, d], .truncatedNormal(std: 0.02))
    }
    var stack: [EncoderLayer] = []
    switch config.kind {
    case .hstu:
      let shared = config.rematerialize ? HSTURecomputable() : nil, scratch = HSTUGradientScratch()
      for i in 0..<config.layers {
        stack.append(HSTULayer(config: config, index: i, parameters: parameters, prefix: prefix, shared: shared,
                               scratch: scratch))
      }
      finalGamma = nil; finalBeta = nil
    case .sasrec:
      for i in 0..<config.layers { stack.append(SASRecLayer(config: config, index: i, parameters: parameters, prefix: prefix)) }
      finalGamma = parameters.declare(prefix + "final_norm.weight", [d], .ones)
      finalBeta = parameters.declare(prefix + "final_norm.bias", [d], .zeros)
    }
    layers = stack
  }

  /// Bytes of the activations HSTU layers hold for the backward after a forward (the
  /// rematerialised set, shared by all layers, counted once).
  public var activationBytes: Int {
    let hstu = layers.compactMap { $0 as? HSTULayer }
    var buffers = hstu.flatMap(\.keptActivations)
    if config.rematerialize, let shared = hstu.first?.saved { buffers += shared.buffers }
    return buffers.reduce(0) { $0 + $1.count * MemoryLayout<Float>.stride }
  }

  /// Item table row `i` (raw, not normalised).
  public var itemTable: UnsafeMutablePointer<Float> { parameters.value(itemEmbedding) }
  public var itemTableGradient: UnsafeMutablePointer<Float> { parameters.gradient(itemEmbedding) }

  /// Layers that see the whole sequence (all of them without truncation).
  var layersBeforeTruncation: Int { min(config.truncation?.layersBefore ?? config.layers, config.layers) }

  /// Runs the encoder over `batch`.
  public func forward(_ batch: SequenceBatch, training: Bool, random: CounterRandom, step: UInt64) -> EncodedBatch {
    let t = batch.tokenCount, d = config.embeddingDim, scale = Float(d).squareRoot()
    precondition(batch.actions.count == t * actionEmbeddings.count,
                 "batch built without the action features this model's input needs")
    offsets.assign(batch.offsets)
    items.assign(batch.items)
    positions.assign(batch.positions)
    actions.assign(batch.actions)
    let hasTime = prepareTimeBuckets(offsets: batch.offsets, keys: batch.keyTimes, queries: batch.queryTimes,
                                     rows: nil, into: timeBuckets, starts: bucketOffsets)
    let full = ForwardContext(
      tokens: t, shape: JaggedShape(offsets: offsets.pointer, batch: batch.batchSize), mask: config.mask,
      timeBuckets: hasTime ? timeBuckets.pointer : nil, bucketOffsets: hasTime ? bucketOffsets.pointer : nil,
      training: training, random: random, step: step)
    fullContext = full
    CPUOps.embeddingForward(ids: items.pointer, table: parameters.value(itemEmbedding), scale: scale,
                            positionIndex: positions.pointer, positionTable: parameters.value(positionEmbedding),
                            embedded.reserve(t * d), rows: t, dim: d)
    for (s, table) in actionEmbeddings.enumerated() {
      CPUOps.embeddingAccumulate(ids: actions.pointer + s, stride: actionEmbeddings.count, table: parameters.value(table),
                                 scale: scale, embedded.pointer, rows: t, dim: d)
    }
    CPUOps.dropoutForward(embedded.pointer, hidden.reserve(t * d), count: t * d, p: training ? config.inputDropout : 0,
                          random: random, stream: full.dropoutStream(layer: 0xFFF, site: 0))
    for layer in layers[0..<layersBeforeTruncation] { layer.forward(hidden.pointer, parameters, full) }

    var x = hidden.pointer, rows = t, context = full, keptRowsOnly = false
    if let truncation = config.truncation, layersBeforeTruncation < config.layers {
      let starts = selectTail(batch, keep: truncation.keepLast)
      let kept = starts.last ?? 0
      CPUOps.gatherRows(hidden.pointer, rows: keptRows.pointer, count: kept, dim: d, truncated.reserve(kept * d))
      let keptTime = prepareTimeBuckets(offsets: starts,
                                        keys: batch.keyTimes, queries: batch.queryTimes, rows: keptRows,
                                        into: keptTimeBuckets, starts: keptBucketOffsets)
      context = ForwardContext(
        tokens: kept, shape: JaggedShape(offsets: keptOffsets.pointer, batch: batch.batchSize), mask: truncation.mask,
        timeBuckets: keptTime ? keptTimeBuckets.pointer : nil, bucketOffsets: keptTime ? keptBucketOffsets.pointer : nil,
        training: training, random: random, step: step)
      keptContext = context
      for layer in layers[layersBeforeTruncation...] { layer.forward(truncated.pointer, parameters, context) }
      if truncation.supervisesDroppedRows {
        // Dropped rows exit with their representation after the first layers; kept rows with the last layer's.
        x = composed.reserve(t * d)
        x.update(from: hidden.pointer, count: t * d)
        for r in 0..<kept { (x + Int(keptRows[r]) * d).update(from: truncated.pointer + r * d, count: d) }
      } else {
        x = truncated.pointer
        rows = kept
        keptRowsOnly = true
      }
    } else {
      keptContext = nil
    }
    encoderOutput = x
    if let finalGamma, let finalBeta {
      CPUOps.layerNormForward(x, output.reserve(rows * d), mean: finalMean.reserve(rows), rstd: finalRstd.reserve(rows),
                              gamma: parameters.value(finalGamma), beta: parameters.value(finalBeta), rows: rows, dim: d)
    } else {
      output.reserve(rows * d).update(from: x, count: rows * d)
    }
    if keptRowsOnly {
      return EncodedBatch(output: output.pointer, rows: rows, offsets: keptOffsets.pointer, tokenIndex: keptRows.pointer)
    }
    allTokens.assign((0..<Int32(t)).map { $0 })
    return EncodedBatch(output: output.pointer, rows: rows, offsets: offsets.pointer, tokenIndex: allTokens.pointer)
  }

  /// Back-propagates `dOutput` (`[rows, D]` of the last forward, consumed), accumulating into the
  /// parameter gradients.
  public func backward(_ dOutput: UnsafeMutablePointer<Float>) {
    guard let full = fullContext, let encoderOutput else { return }
    let d = config.embeddingDim, t = full.tokens, scale = Float(d).squareRoot()
    let kept = keptContext
    let exitsEarly = kept != nil && config.truncation?.supervisesDroppedRows == true
    let rows = kept == nil || exitsEarly ? t : kept!.tokens
    if let finalGamma, let finalBeta {
      CPUOps.layerNormBackward(dOutput, encoderOutput, mean: finalMean.pointer, rstd: finalRstd.pointer,
                               gamma: parameters.value(finalGamma), dOutput, dgamma: parameters.gradient(finalGamma),
                               dbeta: parameters.gradient(finalBeta), rows: rows, dim: d)
    }
    let dx = dHidden.reserve(t * d)
    if let kept {
      // dOutput → the truncated layers' output gradient (the kept rows), back through them, and
      // back to the tokens; a dropped row's own output gradient lands on it directly.
      let dKept: UnsafeMutablePointer<Float>
      if exitsEarly {
        dKept = dTruncated.reserve(kept.tokens * d)
        CPUOps.gatherRows(dOutput, rows: keptRows.pointer, count: kept.tokens, dim: d, dKept)
        dx.update(from: dOutput, count: t * d)
        for r in 0..<kept.tokens { (dx + Int(keptRows[r]) * d).update(repeating: 0, count: d) }
      } else {
        dKept = dOutput
        dx.update(repeating: 0, count: t * d)
      }
      for layer in layers[layersBeforeTruncation...].reversed() { layer.backward(dKept, parameters, kept) }
      CPUOps.scatterRows(dKept, rows: keptRows.pointer, count: kept.tokens, dim: d, dx)
    } else {
      dx.update(from: dOutput, count: t * d)
    }
    for layer in layers[0..<layersBeforeTruncation].reversed() { layer.backward(dx, parameters, full) }
    CPUOps.dropoutBackward(dx, dx, count: t * d, p: full.training ? config.inputDropout : 0,
                           random: full.random, stream: full.dropoutStream(layer: 0xFFF, site: 0))
    CPUOps.embeddingBackward(dx, ids: items.pointer, scale: scale, positionIndex: positions.pointer,
                             dTable: parameters.gradient(itemEmbedding),
                             dPositionTable: parameters.gradient(positionEmbedding), rows: t, dim: d)
    for (s, table) in actionEmbeddings.enumerated() {
      CPUOps.embeddingAccumulateBackward(dx, ids: actions.pointer + s, stride: actionEmbeddings.count,
                                         dTable: parameters.gradient(table), scale: scale, rows: t, dim: d)
    }
  }

  /// Chooses the last `keep` tokens of every sequence; fills `keptOffsets`/`keptRows` and returns
  /// the offsets.
  private func selectTail(_ batch: SequenceBatch, keep: Int) -> [Int] {
    let (starts, rows) = Self.tail(offsets: batch.offsets, keep: keep)
    keptOffsets.assign(starts)
    keptRows.assign(rows)
    return starts
  }

  /// The tokens attention truncation keeps: the last `keep` of every sequence of a jagged batch
  /// with `offsets`, as the kept rows' offsets and the batch token of each kept row.
  static func tail(offsets: [Int], keep: Int) -> (offsets: [Int], rows: [Int32]) {
    var starts = [0], rows: [Int32] = []
    for b in 0..<(offsets.count - 1) {
      let lo = max(offsets[b], offsets[b + 1] - keep)
      rows.append(contentsOf: (lo..<offsets[b + 1]).map { Int32($0) })
      starts.append(rows.count)
    }
    return (starts, rows)
  }

  /// Time buckets of every (query, key) pair per sequence, shared by all layers of a stage;
  /// `rows` maps the stage's tokens to batch tokens (nil: identity). Returns false without a
  /// time bias or timestamps.
  private func prepareTimeBuckets(offsets: [Int], keys: [Int64]?, queries: [Int64]?, rows: HostArray<Int32>?,
                                  into out: HostArray<UInt8>, starts: HostArray<Int>) -> Bool {
    guard config.timeBias, let keys, let queries else { return false }
    let batch = offsets.count - 1
    let s = starts.reserve(batch + 1)
    s[0] = 0
    for b in 0..<batch { let n = offsets[b + 1] - offsets[b]; s[b + 1] = s[b] + n * n }
    let buckets = out.reserve(s[batch]), count = config.timeBuckets
    let map = rows?.pointer
    Parallel.forEach(batch) { _, b in
      let base = offsets[b], n = offsets[b + 1] - base, o = s[b]
      for i in 0..<n {
        let qi = map.map { Int($0[base + i]) } ?? base + i
        for j in 0..<n {
          let kj = map.map { Int($0[base + j]) } ?? base + j
          buckets[o + i * n + j] = hstuTimeBucket(queries[qi] - keys[kj], buckets: count)
        }
      }
    }
    return true
  }
}
