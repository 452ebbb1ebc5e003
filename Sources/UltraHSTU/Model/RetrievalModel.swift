/// What training and evaluation need of a model: a batch in, one output embedding per kept token
/// out, gradients back, and the item table that scores next items.
public protocol RetrievalModel: AnyObject {
  /// The configuration of the main stream (input layout, lengths, width).
  var config: ModelConfig { get }
  var itemCount: Int { get }
  var parameters: ParameterStore { get }
  var itemTable: UnsafeMutablePointer<Float> { get }
  var itemTableGradient: UnsafeMutablePointer<Float> { get }
  func forward(_ batch: SequenceBatch, training: Bool, random: CounterRandom, step: UInt64) -> EncodedBatch
  /// Back-propagates the gradient of the last forward's output (consumed).
  func backward(_ dOutput: UnsafeMutablePointer<Float>)
}

extension SequentialModel: RetrievalModel {}

/// Builds the model `config` describes: a single stack, or a mixture of transducers when it lists
/// extra channels (those read their streams from `data`).
public func makeModel(config: ModelConfig, data: UserSequences, seed: UInt64) -> RetrievalModel {
  if config.channels.isEmpty { return SequentialModel(config: config, itemCount: data.itemCount, seed: seed) }
  return MixtureOfTransducers(config: config, data: data, seed: seed)
}
