/// Where a `Trainer`'s steps and evaluations run when not on the CPU (e.g. a GPU). The trainer
/// keeps the epochs, batch order, model selection, early stopping and checkpoints; the engine
/// owns the weights while training and mirrors them into the host `ParameterStore` on request.
public protocol TrainingEngine: AnyObject {
  /// One optimisation step on `batch` with the dropout masks and negatives of `step` (1-based);
  /// its loss joins the running sum.
  func train(_ batch: SequenceBatch, step: UInt64) throws
  /// The loss summed over the steps since the last call (resets the sum).
  func takeLossSum() throws -> Double
  /// Full-ranking metrics of `stage` with the current weights; `actions` are the action buckets of
  /// `data` when the model's input uses them (computed from `data` when nil).
  func evaluate(_ data: UserSequences, split: LeaveOneOutSplit, stage: LeaveOneOutSplit.Stage,
                actions: ActionFeatures?) throws -> RankingMetrics
  /// Copies the current weights, optimizer moments and step into the host parameters.
  func synchronize(into parameters: ParameterStore) throws
  /// Replaces the engine's weights, moments and step with the host parameters' (after a resume).
  func reload(from parameters: ParameterStore) throws
}
