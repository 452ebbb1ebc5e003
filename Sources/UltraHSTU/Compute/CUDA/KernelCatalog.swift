/// Every kernel module of the package, for compiling them all up front (`hstu gpu-check
/// --compile-only` does this with NVRTC alone, no GPU needed) and for reporting their resources.
public enum CUDAKernelCatalog {
  /// (module name, source, -D defines) of each module the GPU path uses.
  static func modules(attentionDims: [(dqk: Int, dv: Int)]) -> [(String, String, [String: Int])] {
    var list: [(String, String, [String: Int])] = [
      ("layernorm", LayerNormKernels.source, [:]),
      ("elementwise", ElementwiseKernels.source, [:]),
      ("embedding", EmbeddingKernels.source, [:]),
      ("sampled_softmax", SampledSoftmaxKernels.source, [:]),
      ("adamw", AdamWKernels.source, [:]),
      ("hstu_block", HSTUBlockKernels.source, [:]),
      ("head_layout", HeadLayoutKernels.source, [:]),
      ("gemm_epilogue", GEMMEpilogueKernels.source, [:]),
      ("retrieval", RetrievalKernels.source, [:]),
    ]
    for d in attentionDims {
      // The SiLU variants (rab^p, rab^t, both or neither), again with one warpgroup per wgmma forward CTA
      // where the head dims take wgmma, and softmax.
      let biases: [[String: Int]] = [[:], ["POS_BIAS": 1], ["TIME_BIAS": 1], ["POS_BIAS": 1, "TIME_BIAS": 1]]
      let oneWarpgroup = d.dqk % 64 == 0 && d.dv % 64 == 0 ? biases.map { $0.merging(["WG_COUNT": 1]) { $1 } } : []
      for variant in biases + oneWarpgroup + [["SOFTMAX": 1]] {
        list.append(("hstu_attention", AttentionKernels.source, ["DQK": d.dqk, "DV": d.dv].merging(variant) { $1 }))
      }
    }
    return list
  }

  /// Compiles every module for `arch` with ptxas's resource report and returns each module's log
  /// (registers, shared memory, spills). Throws on the first compile error.
  public static func compileAll(arch: String = "sm_90a", attentionDims: [(dqk: Int, dv: Int)] = [(128, 128), (64, 64)]) throws -> [(module: String, log: String)] {
    let nvrtc = try NVRTC.shared()
    return try modules(attentionDims: attentionDims).map { name, source, defines in
      let options = defines.sorted { $0.key < $1.key }.map { "-D\($0.key)=\($0.value)" } + ["--ptxas-options=-v"]
      let out = try nvrtc.compile(source: source, name: name + "-report", arch: arch, options: options)
      let label = name + defines.sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
      return (label, out.fromCache ? "(cached)" : out.log)
    }
  }

  /// The NVRTC version found, as "major.minor".
  public static func nvrtcVersion() throws -> String {
    let v = try NVRTC.shared().version
    return "\(v.major).\(v.minor)"
  }
}
