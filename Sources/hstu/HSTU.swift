import ArgumentParser
import UltraHSTU

@main
struct HSTU: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "hstu",
    abstract: "Train, evaluate and benchmark HSTU / ULTRA-HSTU sequential recommenders.",
    subcommands: [Train.self, Eval.self, Reproduce.self, Ablation.self, Bench.self, FLOPs.self, GPUCheck.self, GPUBench.self])
}
