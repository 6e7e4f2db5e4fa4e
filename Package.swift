// swift-tools-version:6.0
import PackageDescription

let system = Target.Dependency.product(name: "SystemPackage", package: "swift-system")

let package = Package(
    name: "FrameBridge",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "V4L2", targets: ["V4L2"]),
        .library(name: "FrameBridge", targets: ["FrameBridge"]),
        .library(name: "V4L2Simulator", targets: ["V4L2Simulator"]),
        .executable(name: "framedump", targets: ["framedump"]),
        .executable(name: "uvc-camera", targets: ["uvc-camera"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
        // `swift package generate-documentation` for the DocC catalog (tools/test builds it).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // C shim: <linux/videodev2.h>, libv4l2, libv4lconvert (the benchmark's comparisons), ioctl
        // numbers as constants and fixed-arity wrappers for the variadic calls.
        .target(
            name: "CV4L2",
            linkerSettings: [
                .linkedLibrary("v4l2"),
                .linkedLibrary("v4lconvert"),
            ]
        ),
        // framedump's own C helpers (O_DIRECT, statx's direct-I/O alignment; PNG writing with
        // Debian's libpng-dev), kept out of the V4L2 shim.
        .target(name: "CFrameDump", linkerSettings: [.linkedLibrary("png")]),
        // framedump's picture conversion for PNGs: libswscale (Debian's libswscale-dev) told the
        // frame's colorimetry, plus HSV and the repacking of odd layouts in C.
        // libswscale is loaded with dlopen on the first conversion (see convert.c), so it is not linked.
        .target(name: "CFrameConvert"),
        // libjpeg-turbo's TurboJPEG API (Debian's libturbojpeg0-dev).
        .target(name: "CTurboJPEG", linkerSettings: [.linkedLibrary("turbojpeg")]),
        // Typed V4L2 device layer: one thin wrapper per ioctl, typed errors.
        .target(name: "V4L2", dependencies: ["CV4L2", system]),
        // An in-memory V4L2 device that follows the kernel's queue rules, for tests and benchmarks.
        .target(name: "V4L2Simulator", dependencies: ["CV4L2", "CTurboJPEG", "V4L2", system]),
        // AVStream allocator semantics: framing, allocators, selection, stream pointers.
        // Lifetimes: FramePayload is ~Escapable and its RawSpans depend on it (@_lifetime).
        .target(name: "FrameBridge", dependencies: ["CV4L2", "CTurboJPEG", "V4L2", system,
                                                    .product(name: "DequeModule", package: "swift-collections")],
                swiftSettings: [.enableExperimentalFeature("Lifetimes")]),
        // The frame-dump logic behind the CLI: sinks (raw, y4m, PNG), capture session, reports.
        .target(name: "FrameDump", dependencies: ["CV4L2", "CFrameDump", "CFrameConvert", "CTurboJPEG", "V4L2", "FrameBridge", system]),
        // framedump serve: the live view over HTTP (SwiftNIO), above the capture library, which
        // does not depend on the HTTP engine.
        .target(name: "FrameServe", dependencies: [
            "CTurboJPEG", "V4L2", "FrameBridge", "FrameDump", system,
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        // The thin CLI. A release build (what tools/demo and tools/bench run, and what gets
        // installed) links the Swift runtime and FoundationEssentials statically into a non-PIE
        // executable: no symbol lookups across a dozen Swift libraries at load, and none of the
        // ~40,000 load-time relocations of a PIE, each page of which is a copy-on-write fault.
        // lld, because gold warns about mktemp inside libFoundationEssentials.a. Debug builds (the
        // tests, the TSan run) stay dynamic and PIE.
        .executableTarget(
            name: "framedump",
            dependencies: [
                "FrameDump", "FrameServe", "FrameBridge", "V4L2", system,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            linkerSettings: [
                .unsafeFlags(["-static-stdlib", "-use-ld=lld", "-Xclang-linker", "-no-pie", "-l_FoundationCollections", "-l_FoundationCShims"],
                             .when(platforms: [.linux], configuration: .release)),
            ]
        ),
        // An emulated USB Video Class webcam that serves USB/IP to the kernel's vhci_hcd, so the
        // real uvcvideo driver runs against it in the VM.
        .target(name: "UVCCamera", dependencies: ["CTurboJPEG"]),
        .executableTarget(
            name: "uvc-camera",
            dependencies: ["UVCCamera", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Counts heap allocations (replaces malloc in the process); linked only into the benchmark.
        .target(name: "CMallocCounter"),
        // The in-process benchmarks that tools/bench runs.
        .executableTarget(
            name: "framebridge-bench",
            dependencies: ["CMallocCounter", "CV4L2", "CFrameDump", "CTurboJPEG", "V4L2", "V4L2Simulator", "FrameBridge", "FrameDump"]
        ),
        // Helpers shared by the test targets (pointer boxes, spy allocator, /proc counters, the
        // simulated device's backend, expectError, child processes).
        .target(name: "FrameBridgeTestSupport", dependencies: ["FrameBridge", "V4L2", "V4L2Simulator", system,
                                                             .product(name: "Subprocess", package: "swift-subprocess")], path: "Tests/FrameBridgeTestSupport"),
        .testTarget(name: "V4L2Tests", dependencies: ["V4L2", "V4L2Simulator", "CV4L2", "CTurboJPEG", "FrameBridgeTestSupport", system]),
        .testTarget(name: "FrameBridgeTests", dependencies: ["FrameBridge", "V4L2", "V4L2Simulator", "CV4L2", "CTurboJPEG", "FrameBridgeTestSupport", system]),
        .testTarget(name: "FrameServeTests", dependencies: ["FrameServe", "FrameDump", "V4L2", "V4L2Simulator", "CTurboJPEG", "FrameBridgeTestSupport", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "FrameDumpTests", dependencies: ["FrameDump", "FrameBridge", "V4L2", "V4L2Simulator", "CV4L2", "CFrameDump", "CFrameConvert", "CTurboJPEG", "FrameBridgeTestSupport", system]),
        // Integration tests against the real vivid driver; they run inside tools/vivid-vm.
        // Integration tests against the real uvcvideo driver and the emulated camera; they run
        // inside tools/vivid-vm --uvc.
        .testTarget(name: "UVCCameraTests", dependencies: ["UVCCamera"]),
        .testTarget(name: "UVCTests", dependencies: ["FrameBridge", "V4L2", "UVCCamera", "FrameBridgeTestSupport", system]),
        .testTarget(name: "VividTests", dependencies: ["FrameBridge", "V4L2", "CV4L2", "CFrameDump", "FrameBridgeTestSupport", system]),
    ],
    swiftLanguageModes: [.v6]
)
