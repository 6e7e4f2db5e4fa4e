import CV4L2
import Foundation
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// The per-frame calls (QBUF, DQBUF, poll with on-demand production) do not allocate.
///
/// The outer test compiles a tiny malloc-counting library with the system C compiler and
/// runs the inner test in a child process with it preloaded; the inner test skips itself
/// when the library is not loaded.
final class AllocationTests: XCTestCase {
    static let counterSymbol = "v4l2sim_thread_allocations"

    static let counterSource = """
    #include <stddef.h>
    extern void *__libc_malloc(size_t);
    extern void *__libc_calloc(size_t, size_t);
    extern void *__libc_realloc(void *, size_t);
    extern void *__libc_memalign(size_t, size_t);
    static __thread long allocations;
    void *malloc(size_t n) { allocations++; return __libc_malloc(n); }
    void *calloc(size_t n, size_t m) { allocations++; return __libc_calloc(n, m); }
    void *realloc(void *p, size_t n) { allocations++; return __libc_realloc(p, n); }
    void *memalign(size_t a, size_t n) { allocations++; return __libc_memalign(a, n); }
    void *aligned_alloc(size_t a, size_t n) { allocations++; return __libc_memalign(a, n); }
    int posix_memalign(void **out, size_t a, size_t n) {
        allocations++;
        void *p = __libc_memalign(a, n);
        if (!p) return 12;
        *out = p;
        return 0;
    }
    long v4l2sim_thread_allocations(void) { return allocations; }
    """

    func testPerFrameCallsDoNotAllocate() throws {
        if dlsym(nil, AllocationTests.counterSymbol) != nil {
            throw XCTSkip("this is the child process")
        }
        guard let compiler = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else { throw XCTSkip("no C compiler to build the malloc counter") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("v4l2sim-malloc-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("count.c")
        let library = directory.appendingPathComponent("libcount.so")
        try AllocationTests.counterSource.write(to: source, atomically: true, encoding: .utf8)
        XCTAssertEqual(try run(compiler, ["-shared", "-fPIC", "-O2", "-o", library.path, source.path]).status, 0)

        let testBinary = CommandLine.arguments[0]
        var environment = ProcessInfo.processInfo.environment
        environment["LD_PRELOAD"] = library.path
        let child = try run(testBinary, ["V4L2Tests.AllocationTests/testMeasureAllocationsInChild"], environment: environment)
        XCTAssertEqual(child.status, 0, child.output)
        XCTAssertTrue(child.output.contains("testMeasureAllocationsInChild' passed"), child.output)
        XCTAssertFalse(child.output.contains("skipped"), child.output)
    }

    func testMeasureAllocationsInChild() throws {
        guard let symbol = dlsym(nil, AllocationTests.counterSymbol) else {
            throw XCTSkip("run by testPerFrameCallsDoNotAllocate with the malloc counter preloaded")
        }
        let allocations = unsafeBitCast(symbol, to: (@convention(c) () -> Int).self)
        // The third run streams from the live HDMI input with its handle subscribed to source
        // changes and polling for POLLPRI too, while another handle has an event pending.
        for (multiplanar, live) in [(false, false), (true, false), (false, true)] {
            let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: multiplanar, dataOffset: multiplanar ? 128 : 0,
                                                                   fillsPayload: multiplanar,
                                                                   hdmiSource: live ? SimulatedHDMISource() : nil))
            let device = try VideoDevice(path: videoPath, backend: backend)
            let watcher = try VideoDevice(path: videoPath, backend: backend)
            if live {
                try device.selectInput(3)
                try device.subscribe(.sourceChange, id: 3)
                try watcher.subscribe(.sourceChange, id: 3)
                XCTAssertTrue(backend.changeSource(path: videoPath, width: 1280, height: 720))
                XCTAssertNotNil(try device.dequeueEvent())
            }
            let events = Int16(live ? POLLIN | POLLPRI : POLLIN)
            try device.startMMAPStreaming(count: 4)
            let fd = device.descriptor
            let type = device.captureType.rawValue
            var planes = (v4l2_plane(), v4l2_plane(), v4l2_plane(), v4l2_plane(),
                          v4l2_plane(), v4l2_plane(), v4l2_plane(), v4l2_plane())
            var failures = 0
            func cycle() {
                withUnsafeMutableBytes(of: &planes) { bytes in
                    var raw = v4l2_buffer()
                    raw.type = type
                    raw.memory = 1
                    raw.length = 8
                    raw.m.planes = bytes.baseAddress!.assumingMemoryBound(to: v4l2_plane.self)
                    if case .success(let revents) = backend.poll(fd, events: events, timeoutMilliseconds: 0), revents != Int16(POLLIN) {
                        failures += 1
                    }
                    if withUnsafeMutablePointer(to: &raw, { backend.ioctl(fd, request: CV4L2_VIDIOC_DQBUF, argument: $0) }) != nil {
                        failures += 1
                    }
                    raw.m.planes = bytes.baseAddress!.assumingMemoryBound(to: v4l2_plane.self)
                    raw.length = multiplanar ? 8 : raw.length
                    if withUnsafeMutablePointer(to: &raw, { backend.ioctl(fd, request: CV4L2_VIDIOC_QBUF, argument: $0) }) != nil {
                        failures += 1
                    }
                }
            }
            for _ in 0..<64 { cycle() } // warm up: first-use counters, lazy globals
            let before = allocations()
            for _ in 0..<2000 { cycle() }
            let after = allocations()
            XCTAssertEqual(failures, 0)
            XCTAssertEqual(after - before, 0, "allocations in 2000 poll/DQBUF/QBUF cycles (multiplanar \(multiplanar), live \(live))")
            XCTAssertEqual(backend.queueState(path: videoPath)?.framesProduced, 2064)
            XCTAssertEqual(backend.pendingEventCount(path: videoPath), live ? 1 : 0, "the watcher's event is still pending")
            withExtendedLifetime(watcher) {}
        }
    }

    private func run(_ executable: String, _ arguments: [String],
                     environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
