/// Where the HSTU attention backward puts dK and dV.
///
/// `.separate`: fp32 arrays in the attention's head layout `[T, heads · dqk]` and `[T, heads · dv]`.
/// `.siluMerged`: straight into the HSTU block's bf16 dPre as dK, dV ⊙ SiLU'(pre), where `pre` and
/// `dPre` are `[T, 2·heads·(dv + dqk)]` rows of u | v | q | k (each head-major, no padding, so the
/// shape's dqk and dv must be the layer's own head dims): the v and k parts of the merge that
/// `uvqkMergeSiLUBackward` would do, done in the backward's epilogue, so dK and dV never go through
/// memory in fp32.
public enum AttentionKeyGradients {
  case separate(dk: DeviceArray<Float>, dv: DeviceArray<Float>)
  case siluMerged(pre: DeviceArray<BFloat16>, dPre: DeviceArray<BFloat16>)

  /// The kernels' `dk, dv, pre, dpre, preStride, preV, preK` (`KeyGradientOutput`).
  func arguments(_ shape: AttentionShape, tokens: Int) throws -> [KernelArgument] {
    switch self {
    case let .separate(dk, dv):
      guard dk.count >= tokens * shape.heads * shape.dqk, dv.count >= tokens * shape.heads * shape.dv else {
        throw CUDAError.unsupported("attention backward: dk or dv holds fewer than \(tokens) tokens")
      }
      return [.pointer(dk.address), .pointer(dv.address), .pointer(0), .pointer(0), .int(0), .int(0), .int(0)]
    case let .siluMerged(pre, dPre):
      let hv = shape.heads * shape.dv, hq = shape.heads * shape.dqk, stride = 2 * (hv + hq)
      guard pre.count >= tokens * stride, dPre.count >= tokens * stride else {
        throw CUDAError.unsupported("attention backward: pre or dPre holds fewer than \(tokens) rows of \(stride)")
      }
      return [.pointer(0), .pointer(0), .pointer(pre.address), .pointer(dPre.address),
              .int(Int32(stride)), .int(Int32(hv)), .int(Int32(2 * hv + hq))]
    }
  }
}
