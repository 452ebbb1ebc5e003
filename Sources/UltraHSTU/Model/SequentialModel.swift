import Foundation

/// A layer of the encoder stack: transforms the running activations in place and back.
protocol EncoderLayer: AnyObject {
  func forward(_ x: UnsafeMutablePointer<Float>, _ p: ParameterStore, _ c: ForwardContext)
  func backward(_ dx: UnsafeMutablePointer<Float>, _ p: ParameterStore, _ c: ForwardContext)
}

extension HSTULayer: EncoderLayer {}
extension SASRecLayer: EncoderLayer {}

/// A sequential recommender: item + position embeddings, an encoder stack (HSTU or SASRec),
/// and per-token output embeddings that score the next item by cosine similarity.
public final class SequentialModel {
  public let config: ModelConfig
  /// Items are `1...itemCount`; row 0 of the item table is padding.
  public let itemCount: Int
  public let parameters = ParameterStore()
  let itemEmbedding, positionEmbedding: ParameterEntry
  let finalGamma, finalBeta: ParameterEntry?
  let layers: [EncoderLayer]

  let embedded = HostBuffer(), hidden = HostBuffer(), finalMean = HostBuffer(), finalRstd = HostBuffer()
  let output = HostBuffer()
  let dHidden = HostBuffer()
  let offsets = HostArray<Int>(), items = HostArray<Int32>(), positions = HostArray<Int32>()
  let timeBuckets = HostArray<UInt8>(), bucketOffsets = HostArray<Int>()

  public init(config: ModelConfig, itemCount: Int, seed: UInt64) {
    self.config = config
    self.itemCount = itemCount
    let d = config.embeddingDim, parameters = self.parameters
    itemEmbedding = parameters.declare("item_embedding", [itemCount + 1, d], .truncatedNormal(std: 0.02))
    positionEmbedding = parameters.declare("position_embedding", [config.maxSequenceLength, d],
                                           .xavierNormal(fanIn: config.maxSequenceLength, fanOut: d))
    switch config.kind {
    case .hstu:
      layers = (0..<config.layers).map { HSTULayer(config: config, index: $0, parameters: parameters) }
      finalGamma = nil; finalBeta = nil
    case .sasrec:
      layers = (0..<config.layers).map { SASRecLayer(config: config, index: $0, parameters: parameters) }
      finalGamma = parameters.declare("final_norm.weight", [d], .ones)
      finalBeta = parameters.declare("final_norm.bias", [d], .zeros)
    }
    parameters.allocate(seed: seed)
  }

  /// Item table row `i` (raw, not normalised).
  public var itemTable: UnsafeMutablePointer<Float> { parameters.value(itemEmbedding) }
  public var itemTableGradient: UnsafeMutablePointer<Float> { parameters.gradient(itemEmbedding) }

  /// Runs the encoder over `batch`; returns the output embeddings `[T, D]` (valid until the next
  /// forward) and the context the backward needs.
  public func forward(_ batch: SequenceBatch, training: Bool, random: CounterRandom, step: UInt64)
    -> (output: UnsafeMutablePointer<Float>, context: ForwardContext) {
    let t = batch.tokenCount, d = config.embeddingDim
    offsets.assign(batch.offsets)
    items.assign(batch.items)
    positions.assign(batch.positions)
    let hasTime = prepareTimeBuckets(batch)
    let context = ForwardContext(
      tokens: t, shape: JaggedShape(offsets: offsets.pointer, batch: batch.batchSize), mask: .causal,
      timeBuckets: hasTime ? timeBuckets.pointer : nil, bucketOffsets: hasTime ? bucketOffsets.pointer : nil,
      training: training, random: random, step: step)
    CPUOps.embeddingForward(ids: items.pointer, table: parameters.value(itemEmbedding), scale: Float(d).squareRoot(),
                            positionIndex: positions.pointer, positionTable: parameters.value(positionEmbedding),
                            embedded.reserve(t * d), rows: t, dim: d)
    CPUOps.dropoutForward(embedded.pointer, hidden.reserve(t * d), count: t * d,
                          p: training ? config.inputDropout : 0, random: random, stream: context.dropoutStream(layer: 0xFFF, site: 0))
    for layer in layers { layer.forward(hidden.pointer, parameters, context) }
    if let finalGamma, let finalBeta {
      CPUOps.layerNormForward(hidden.pointer, output.reserve(t * d), mean: finalMean.reserve(t), rstd: finalRstd.reserve(t),
                              gamma: parameters.value(finalGamma), beta: parameters.value(finalBeta), rows: t, dim: d)
    } else {
      output.reserve(t * d).update(from: hidden.pointer, count: t * d)
    }
    return (output.pointer, context)
  }

  /// Back-propagates `dOutput` (`[T, D]`, consumed) through the last forward, accumulating into
  /// the parameter gradients.
  public func backward(_ dOutput: UnsafeMutablePointer<Float>, context: ForwardContext) {
    let t = context.tokens, d = config.embeddingDim
    let dx = dHidden.reserve(t * d)
    if let finalGamma, let finalBeta {
      CPUOps.layerNormBackward(dOutput, hidden.pointer, mean: finalMean.pointer, rstd: finalRstd.pointer,
                               gamma: parameters.value(finalGamma), dx, dgamma: parameters.gradient(finalGamma),
                               dbeta: parameters.gradient(finalBeta), rows: t, dim: d)
    } else {
      dx.update(from: dOutput, count: t * d)
    }
    for layer in layers.reversed() { layer.backward(dx, parameters, context) }
    CPUOps.dropoutBackward(dx, dx, count: t * d, p: context.training ? config.inputDropout : 0,
                           random: context.random, stream: context.dropoutStream(layer: 0xFFF, site: 0))
    CPUOps.embeddingBackward(dx, ids: items.pointer, scale: Float(d).squareRoot(), positionIndex: positions.pointer,
                             dTable: parameters.gradient(itemEmbedding),
                             dPositionTable: parameters.gradient(positionEmbedding), rows: t, dim: d)
  }

  /// Time buckets of every (query, key) pair, computed once per batch and shared by all layers.
  /// Returns whether the batch has time buckets (a time bias is configured and the data has timestamps).
  private func prepareTimeBuckets(_ batch: SequenceBatch) -> Bool {
    guard config.timeBias, let keys = batch.keyTimes, let queries = batch.queryTimes else { return false }
    let starts = bucketOffsets.reserve(batch.batchSize + 1)
    starts[0] = 0
    for b in 0..<batch.batchSize {
      let n = batch.offsets[b + 1] - batch.offsets[b]
      starts[b + 1] = starts[b] + n * n
    }
    let out = timeBuckets.reserve(starts[batch.batchSize])
    let buckets = config.timeBuckets
    Parallel.forEach(batch.batchSize) { _, b in
      let base = batch.offsets[b], n = batch.offsets[b + 1] - base, o = starts[b]
      for i in 0..<n {
        for j in 0..<n { out[o + i * n + j] = hstuTimeBucket(queries[base + i] - keys[base + j], buckets: buckets) }
      }
    }
    return true
  }
}
