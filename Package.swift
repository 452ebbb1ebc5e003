// swift-tools-version: 6.0
import PackageDescription

// Release builds drop bounds checks in the numeric kernels; debug builds (the tests) still
// optimise them, since finite-difference checks run the model thousands of times.
let optimize: [SwiftSetting] = [
  .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
  .unsafeFlags(["-O"], .when(configuration: .debug)),
]

let package = Package(
  name: "UltraHSTU",
  products: [
    .library(name: "UltraHSTU", targets: ["UltraHSTU"]),
    .executable(name: "hstu", targets: ["hstu"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
  ],
  targets: [
    .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
    // ml-latest-small's files; EmbeddedData.c compiles ratings.csv.gz into the binary.
    .target(name: "EmbeddedData", exclude: ["ml-latest-small"]),
    .target(
      name: "UltraHSTU",
      dependencies: ["CZlib", "EmbeddedData"],
      swiftSettings: optimize
    ),
    .executableTarget(
      name: "hstu",
      dependencies: ["UltraHSTU", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      swiftSettings: optimize
    ),
    .testTarget(name: "UltraHSTUTests", dependencies: ["UltraHSTU"], exclude: ["Fixtures"]),
    .testTarget(name: "HSTUCommandTests", dependencies: ["hstu"]),
  ],
  swiftLanguageModes: [.v5]
)
