import ArgumentParser
import Testing
@testable import hstu

/// The command line's flags reach the command they are written for.
@Suite struct CommandLineTests {
  /// A parent's option takes its name from every subcommand below it (`hstu gpu-bench step --heads 8`
  /// once set the attention table's heads and left the step's at 4), so no command with
  /// subcommands declares arguments of its own.
  @Test func groupsDeclareNoArguments() {
    func groups(_ command: ParsableCommand.Type) -> [ParsableCommand.Type] {
      let subcommands = command.configuration.subcommands
      return (subcommands.isEmpty ? [] : [command]) + subcommands.flatMap(groups)
    }
    let all = groups(HSTU.self)
    #expect(all.count >= 3, "hstu, bench and gpu-bench are groups")
    for group in all {
      #expect(Mirror(reflecting: group.init()).children.isEmpty, "\(group) declares arguments")
    }
  }

  /// The step benchmark gets the flags that its two parents also know (`--heads`, `--repeats`).
  @Test(arguments: [["gpu-bench", "step"], ["bench", "step"]])
  func stepFlagsReachTheStep(path: [String]) throws {
    let command = try HSTU.parseAsRoot(path + ["--dim", "512", "--heads", "8", "--repeats", "3", "--semi-local", "256"])
    let step = try #require(command as? GPUStepBench)
    #expect(step.dim == 512)
    #expect(step.heads == 8)
    #expect(step.repeats == 3)
    #expect(step.semiLocal == 256)
  }

  /// `hstu gpu-bench` without a subcommand is the attention table; its window sizes are validated.
  @Test func attentionTableIsTheDefault() throws {
    let command = try HSTU.parseAsRoot(["gpu-bench", "--lengths", "1024", "4096", "--windows", "64", "128", "--heads", "2"])
    let table = try #require(command as? GPUAttentionBench)
    #expect(table.lengths == [1024, 4096])
    #expect(table.windows == [64, 128])
    #expect(table.heads == 2)
    #expect(throws: (any Error).self) { try HSTU.parseAsRoot(["gpu-bench", "--windows", "0"]) }
  }
}
