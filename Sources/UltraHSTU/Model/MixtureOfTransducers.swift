/// Mixture of transducers (spec §3.8): the main stream (all events) and each extra channel (a
/// filtered stream, e.g. high ratings) are encoded by their own stacks; at every main token the
/// channel's state at its latest event not after that token is projected to the main width and
/// added, so the fused embedding never sees the future:
///
///     u_i = main_i + Σ_c W_c · channel_c[j_c(i)]      (j_c(i) = last channel-c row with event ≤ event_i)
///
/// A channel of the main width embeds items with the main item table unless it asks for its own
/// (`TransducerChannel.sharesItemEmbedding`).
public final class MixtureOfTransducers: RetrievalModel {
  public let config: ModelConfig
  public let parameters = ParameterStore()
  let main: SequentialModel
  let channels: [(channel: TransducerChannel, model: SequentialModel, projection: ParameterEntry)]
  let data: UserSequences
  let actions: [ActionFeatures?]

  // Per channel: its encoded batch, the channel row each main output row reads (−1: none yet).
  private var channelEncoded: [EncodedBatch] = []
  private let sourceRows: [HostArray<Int32>]
  private let gathered: [HostBuffer], dChannel: [HostBuffer]
  private let fused = HostBuffer()
  private var mainEncoded: EncodedBatch?

  public init(config: ModelConfig, data: UserSequences, seed: UInt64) {
    self.config = config
    self.data = data
    var single = config
    single.channels = []
    let parameters = self.parameters
    let mainModel = SequentialModel(config: single, itemCount: data.itemCount, parameters: parameters, prefix: "")
    main = mainModel
    let mainItems = mainModel.itemEmbedding
    channels = config.channels.map { c in
      let shared = c.sharesItemEmbedding && c.model.embeddingDim == config.embeddingDim ? mainItems : nil
      let model = SequentialModel(config: c.model, itemCount: data.itemCount, parameters: parameters,
                                  prefix: "channels.\(c.name).", sharedItemEmbedding: shared)
      let projection = parameters.declare("channels.\(c.name).fusion.weight", [c.model.embeddingDim, config.embeddingDim],
                                          .xavierUniform(fanIn: c.model.embeddingDim, fanOut: config.embeddingDim))
      return (c, model, projection)
    }
    actions = config.channels.map { $0.model.input == .itemsOnly ? nil : ActionFeatures(data, signals: $0.model.actionSignals) }
    sourceRows = config.channels.map { _ in HostArray<Int32>() }
    gathered = config.channels.map { _ in HostBuffer() }
    dChannel = config.channels.map { _ in HostBuffer() }
    parameters.allocate(seed: seed)
  }

  public var itemCount: Int { main.itemCount }
  public var itemTable: UnsafeMutablePointer<Float> { main.itemTable }
  public var itemTableGradient: UnsafeMutablePointer<Float> { main.itemTableGradient }

  public func forward(_ batch: SequenceBatch, training: Bool, random: CounterRandom, step: UInt64) -> EncodedBatch {
    let encoded = main.forward(batch, training: training, random: random, step: step)
    mainEncoded = encoded
    let d = config.embeddingDim
    fused.reserve(encoded.rows * d).update(from: encoded.output, count: encoded.rows * d)
    channelEncoded = []
    for (c, entry) in channels.enumerated() {
      let (channelBatch, rows) = channelInput(c, for: batch, outputOffsets: encoded.offsets, outputTokens: encoded.tokenIndex,
                                              outputRows: encoded.rows)
      let out = entry.model.forward(channelBatch, training: training, random: random, step: Self.channelStep(step, channel: c))
      channelEncoded.append(out)
      sourceRows[c].assign(rows)
      // Gather each main row's channel state (zero where the channel has no event yet), project, add.
      let dc = entry.channel.model.embeddingDim
      let g = gathered[c].reserve(encoded.rows * dc)
      for r in 0..<encoded.rows {
        let src = Int(rows[r])
        if src < 0 { (g + r * dc).update(repeating: 0, count: dc) } else { (g + r * dc).update(from: out.output + src * dc, count: dc) }
      }
      BLAS.shared.sgemm(m: encoded.rows, n: d, k: dc, a: g, lda: dc, b: parameters.value(entry.projection), ldb: d,
                        beta: 1, c: fused.pointer, ldc: d)
    }
    return EncodedBatch(output: fused.pointer, rows: encoded.rows, offsets: encoded.offsets, tokenIndex: encoded.tokenIndex)
  }

  public func backward(_ dOutput: UnsafeMutablePointer<Float>) {
    guard let encoded = mainEncoded else { return }
    let d = config.embeddingDim
    for (c, entry) in channels.enumerated() {
      let dc = entry.channel.model.embeddingDim, out = channelEncoded[c]
      let dg = dChannel[c].reserve(encoded.rows * dc)
      CPUOps.linearBackward(dOutput, gathered[c].pointer, weight: parameters.value(entry.projection), dg,
                            dWeight: parameters.gradient(entry.projection), dBias: nil, rows: encoded.rows, inDim: dc, outDim: d)
      // Scatter the gathered rows' gradients back to the channel rows they were read from.
      let dOut = out.output
      dOut.update(repeating: 0, count: out.rows * dc)
      for r in 0..<encoded.rows {
        let src = Int(sourceRows[c][r])
        if src < 0 { continue }
        for k in 0..<dc { dOut[src * dc + k] += dg[r * dc + k] }
      }
      entry.model.backward(dOut)
    }
    main.backward(dOutput)
  }

  /// The dropout step of channel `c`'s stack (its masks differ from the main stack's).
  static func channelStep(_ step: UInt64, channel c: Int) -> UInt64 { step &+ UInt64(c + 1) << 48 }

  /// Channel `index`'s batch for `batch`, and for each main output row (`outputOffsets` and
  /// `outputTokens` as in `EncodedBatch`) the channel *output* row it reads: the one of its latest
  /// channel event not after the row's event; −1 when there is none, or when the channel's own
  /// attention truncation dropped it.
  func channelInput(_ index: Int, for batch: SequenceBatch, outputOffsets: UnsafePointer<Int>,
                    outputTokens: UnsafePointer<Int32>, outputRows: Int) -> (SequenceBatch, [Int32]) {
    let channel = channels[index].channel
    var out = SequenceBatch()
    var tokens = [Int32](repeating: -1, count: outputRows)
    for b in 0..<batch.batchSize {
      let user = batch.users[b]
      let range = batch.offsets[b]..<batch.offsets[b + 1]
      guard let lastEvent = range.map({ Int(batch.events[$0]) }).max() else { continue }
      let start = data.offsets[user]
      var events = (start...lastEvent).filter { channel.filter.accepts(data, event: $0) }
      events = Array(events.suffix(channel.model.maxSequenceLength))
      let base = out.tokenCount
      out.append(user: user, events: events, data: data, target: 0, targetTime: nil, input: channel.model.input,
                 actionFeatures: actions[index])
      // Channel token of each channel event (the last token of an event, for interleaved input).
      let perEvent = channel.model.input == .interleaved ? 2 : 1
      var k = -1
      for r in outputOffsets[b]..<outputOffsets[b + 1] {
        let e = Int(batch.events[Int(outputTokens[r])])
        while k + 1 < events.count && events[k + 1] <= e { k += 1 }
        if k >= 0 { tokens[r] = Int32(base + (k + 1) * perEvent - 1) }
      }
    }
    guard let truncation = channel.model.truncation, truncation.layersBefore < channel.model.layers,
          !truncation.supervisesDroppedRows else { return (out, tokens) }
    // Channel tokens → channel output rows (a token dropped by the channel's truncation has none).
    var outputRow = [Int32](repeating: -1, count: out.tokenCount)
    for (r, token) in SequentialModel.tail(offsets: out.offsets, keep: truncation.keepLast).rows.enumerated() {
      outputRow[Int(token)] = Int32(r)
    }
    return (out, tokens.map { $0 < 0 ? -1 : outputRow[Int($0)] })
  }
}
