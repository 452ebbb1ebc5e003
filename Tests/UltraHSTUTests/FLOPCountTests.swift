import Testing
import UltraHSTU

/// HSTU with D = 4, one head, dqk = 2, dv = 3.
private func smallHSTU(layers: Int = 1) -> ModelConfig {
  ModelConfig(kind: .hstu, embeddingDim: 4, layers: layers, heads: 1, attentionDim: 2, linearDim: 3, ffnDim: 0,
              maxSequenceLength: 8, inputDropout: 0, linearDropout: 0, normalizer: .trueLength,
              positionBias: false, timeBias: false)
}

@Test func hstuCountedByHand() {
  // L = 3, causal: 1 + 2 + 3 = 6 kept pairs.
  // projection: 3 tokens · D 4 · (2·1·3 + 2·1·2 = 10) · 2 = 240
  // output:     3 tokens · H·dv 3 · D 4 · 2               = 72
  // attention:  6 pairs · H 1 · (dqk 2 + dv 3) · 2         = 60
  // input: item table only, no additions                   = 0
  let forward = FLOPCount.forward(model: smallHSTU(), length: 3)
  #expect(forward[.projection] == 240)
  #expect(forward[.output] == 72)
  #expect(forward[.attention] == 60)
  #expect(forward[.input] == 0)
  #expect(forward.total == 372)
  // Two layers: twice the encoder.
  #expect(FLOPCount.forward(model: smallHSTU(layers: 2), length: 3).total == 744)

  // Loss: 3 positions · (2 negatives + 1) · D 4 · 2 = 72; training = 3 · (372 + 72) = 1332.
  let training = FLOPCount.training(model: smallHSTU(), length: 3, negatives: 2)
  #expect(training[.loss] == 216)
  #expect(training.total == 1332)
  // Inference: forward 372 + 10 items · D 4 · 2 = 80.
  let inference = FLOPCount.inference(model: smallHSTU(), length: 3, scoredItems: 10)
  #expect(inference[.scoring] == 80)
  #expect(inference.total == 452)
  // Per token: 452 / 3 tokens.
  #expect(inference.scaled(by: 1.0 / 3).total == 452.0 / 3)
}

@Test func sasrecCountedByHand() {
  let model = ModelConfig(kind: .sasrec, embeddingDim: 2, layers: 1, heads: 1, attentionDim: 2, linearDim: 2,
                          ffnDim: 3, maxSequenceLength: 8, inputDropout: 0, linearDropout: 0,
                          normalizer: .trueLength, positionBias: false, timeBias: false)
  // L = 2, causal: 3 kept pairs.
  // input:        2 tokens · (item + position − 1) · D 2 = 4
  // projection:   2 tokens · 3 · D 2 · D 2 · 2          = 48
  // output:       2 tokens · D 2 · D 2 · 2              = 16
  // feed-forward: 2 tokens · 2 · D 2 · ffn 3 · 2        = 48
  // attention:    3 pairs · 2 · D 2 · 2                 = 24
  let forward = FLOPCount.forward(model: model, length: 2)
  #expect(forward.parts == [.input: 4, .projection: 48, .output: 16, .feedForward: 48, .attention: 24])
  #expect(forward.total == 140)
}

/// Attention counts only the pairs the mask keeps.
@Test func maskedAttention() {
  // Reading A, K1 = K2 = 2, L = 6 keeps 1+2+3+3+5+6 = 20 pairs (full causal: 21); 10 FLOPs a pair.
  let sla = FLOPCount.encoder(model: smallHSTU(), length: 6, mask: .semiLocalMeta(k1: 2, k2: 2))
  #expect(sla[.attention] == 200)
  #expect(FLOPCount.encoder(model: smallHSTU(), length: 6)[.attention] == 210)
}

/// Attention truncation as a sum of stacks: 1 SLA layer on L = 6, then 1 causal layer on L′ = 2.
@Test func attentionTruncationComposes() {
  let model = smallHSTU()
  // Full stage: projection 6·80 = 480, output 6·24 = 144, attention 20·10 = 200 -> 824.
  // Truncated stage: projection 2·80 = 160, output 2·24 = 48, attention 3·10 = 30 -> 238.
  // Loss on the 2 remaining positions: 2·3·4·2 = 48.  Training: 3 · (824 + 238 + 48) = 3330.
  let forward = FLOPCount.input(model: model, length: 6)
    + FLOPCount.encoder(model: model, layers: 1, length: 6, mask: .semiLocalMeta(k1: 2, k2: 2))
    + FLOPCount.encoder(model: model, layers: 1, length: 2)
  #expect(forward.total == 1062)
  let training = FLOPCount.training(forward: forward + FLOPCount.loss(model: model, supervisedPositions: 2, negatives: 2))
  #expect(training.total == 3330)
}

@Test func averageOverLengths() {
  // Forward of L = 3 is 372; of L = 6 is 480 + 144 + 21·10 = 834.
  let (perSample, perToken) = FLOPBreakdown.average(lengths: [3, 6, 3]) {
    FLOPCount.forward(model: smallHSTU(), length: $0)
  }
  #expect(perSample.total == (372 + 834 + 372) / 3.0)
  #expect(perToken.total == (372 + 834 + 372) / 12.0)
}

/// A whole ULTRA-style model counted by hand: action-aware input, truncation, one channel.
@Test func wholeModelCountedByHand() {
  var model = smallHSTU(layers: 2)
  model.input = .actionAware
  model.actionSignals = [.rating]
  model.truncation = AttentionTruncation(layersBefore: 1, keepLast: 2, supervisesDroppedRows: false)
  var channel = smallHSTU()
  channel.embeddingDim = 2
  channel.linearDim = 1
  model.channels = [TransducerChannel(name: "c", filter: .all, model: channel)]
  // Main, L = 3: input (item + action − 1 addition) 3 · 4 = 12; layer 1 on 3 tokens = 372 (see above);
  // layer 2 on the last 2 tokens: projection 2·4·10·2 = 160, output 2·3·4·2 = 48, attention 3 pairs·5·2 = 30 → 238.
  // Channel, 2 tokens, D 2, dqk 2, dv 1: projection 2·2·(2+4)·2 = 48, output 2·1·2·2 = 8, attention 3·3·2 = 18 → 74;
  // its fusion projection onto the 2 output rows (the kept ones): 2 · 2 · 4 · 2 = 32.
  let forward = FLOPCount.modelForward(config: model, tokens: 3, channelTokens: [2])
  #expect(forward.total == 12 + 372 + 238 + 74 + 32)
  // Training: loss on the 2 output rows, (2 negatives + 1) · 4 · 2 each = 48; × 3.
  #expect(FLOPCount.modelTraining(config: model, tokens: 3, channelTokens: [2], negatives: 2).total == 3 * (728 + 48))
  // Supervising the dropped row too: all 3 rows are outputs (fusion 3 · 2 · 4 · 2 = 48, loss 72).
  model.truncation?.supervisesDroppedRows = true
  #expect(FLOPCount.modelForward(config: model, tokens: 3, channelTokens: [2]).total == 12 + 372 + 238 + 74 + 48)
  #expect(FLOPCount.modelTraining(config: model, tokens: 3, channelTokens: [2], negatives: 2).total == 3 * (744 + 72))
}
