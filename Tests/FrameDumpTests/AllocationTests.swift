import FrameBridge
import FrameDump
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Heap allocations counted by a malloc-counting library preloaded into the test process
/// (LD_PRELOAD of a build of Sources/CMallocCounter exporting `cmalloc_counter_allocations`).
private let allocationCounter: (@convention(c) () -> UInt64)? = {
    guard let symbol = dlsym(nil /* RTLD_DEFAULT */, "cmalloc_counter_allocations") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) () -> UInt64).self)
}()

/// Runs only in a release build with a malloc counter preloaded, as tools/test runs it:
///
///     cc -shared -fPIC -O2 -o /tmp/mc.so Sources/CMallocCounter/counter.c -ISources/CMallocCounter/include
///     swift build -c release --build-tests --scratch-path .build-release -Xswiftc -enable-testing
///     LD_PRELOAD=/tmp/mc.so .build-release/release/FrameBridgePackageTests.xctest FrameDumpTests.AllocationTests
///
/// (debug builds of the lower layers allocate per frame where the optimizer removes it).
final class AllocationTests: XCTestCase {
    func testRawCaptureAllocatesNothingPerFrame() throws {
        #if DEBUG
        throw XCTSkip("allocation counts are meaningful in release builds only")
        #else
        guard let count = allocationCounter else {
            throw XCTSkip("run with LD_PRELOAD of a malloc counter exporting cmalloc_counter_allocations")
        }
        let path = makeTemporaryDirectory(self) + "/alloc.raw"
        func run(_ frames: Int) throws -> UInt64 {
            let backend = makeBackend()
            var marks: [UInt64] = []
            marks.reserveCapacity(2)
            _ = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: frames,
                                              format: FormatOptions(width: 320, height: 180), outputPath: path)) { written in
                if written == 5 || written == frames { marks.append(count()) }
            }
            return marks[1] - marks[0]
        }
        let steady = try run(205)
        print("allocations in 200 steady-state frames: \(steady)")
        XCTAssertEqual(steady, 0)
        #endif
    }
}
