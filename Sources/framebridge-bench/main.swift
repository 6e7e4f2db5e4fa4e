// framebridge-bench: the in-process benchmarks of tools/bench, on the simulated device.
//
//   framebridge-bench allocations [--frames N]   heap allocations per frame, steady state
//   framebridge-bench overhead [--frames N] [--runs R]
//                                                 ns per frame of the bridge's
//                                                 dequeue -> stream pointer -> release -> requeue
//                                                 beside a bare loop of the same fake ioctls, and
//                                                 the same with lock / read a byte / unlock
//   framebridge-bench chain [--frames N]          the chain alone, for a profiler
//   framebridge-bench bare [--frames N]           the bare loop alone, for a profiler
//   framebridge-bench session [--frames N]        framedump's capture loop (CaptureSession,
//                                                 raw to /dev/null) on the simulated device:
//                                                 ns per frame beyond set-up, for a profiler
//   framebridge-bench write-floor -o FILE [--bytes B] [--frames N]
//                                                 CPU time of write(2) alone: one write of a
//                                                 B-byte frame from memory, N times, to FILE; no
//                                                 capture. The least a tool that hands its
//                                                 frames to that file system with write(2) spends.
//   framebridge-bench mjpeg [--frames N] [--width W] [--height H]
//                                                 MJPEG decode (TurboJPEG vs libv4lconvert) and
//                                                 PNG writing by zlib level (MJPEGBench.swift)
//   framebridge-bench png-convert [--frames N] [--width W] [--height H]
//                                                 an uncompressed frame to a PNG's RGB24:
//                                                 libswscale (PNGSink) vs libv4lconvert
//                                                 (PictureBench.swift)
//
// Each prints `figure: NAME value VALUE reference REFERENCE` lines that tools/bench collects.
import CMallocCounter
import CV4L2
import FrameBridge
import FrameDump
import V4L2
import V4L2Simulator
#if canImport(Glibc)
import Glibc
#endif

func argument(_ name: String, default value: Int) -> Int {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count, let parsed = Int(arguments[index + 1]) else {
        return value
    }
    return parsed
}

func fail(_ message: String) -> Never {
    let text = "framebridge-bench: \(message)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

let devicePath = "/dev/video0"

func makeBackend(fills: Bool) -> SimulatedV4L2Backend {
    SimulatedV4L2Backend(path: devicePath, configuration: SimulatedDeviceConfiguration(
        initialWidth: 640, initialHeight: 360, production: .onDemand, fillsPayload: fills))
}

/// The chain exactly: dequeue -> stream pointer -> release -> requeue. The pointer
/// takes the frame's only reference (`keepLeadingEdge: false`), so its release queues the
/// buffer again, as the bare loop's QBUF does.
@inline(never)
func runChain(_ pin: CapturePin, frames: Int) -> Int {
    var count = 0
    for _ in 0..<frames {
        do {
            guard let pointer = try pin.next(timeout: .milliseconds(1000), keepLeadingEdge: false) else {
                fail("the simulated device stopped delivering")
            }
            count &+= Int(pointer.info.sequence & 1)
        } catch {
            fail("chain loop: \(error)")
        }
    }
    return count
}

/// Streams `frames` frames through the pin: next, lock, read a byte, unlock, release (the
/// leading edge keeps the frame until the next advance, the AVStream default). Returns the sum
/// of the bytes read (so the work is not optimized away).
@inline(never)
func runBridge(_ pin: CapturePin, frames: Int) -> Int {
    var checksum = 0
    for _ in 0..<frames {
        do {
            guard var pointer = try pin.next(timeout: .milliseconds(1000)) else {
                fail("the simulated device stopped delivering")
            }
            try pointer.lock()
            checksum &+= pointer.withPayload { Int($0.plane(0).unsafeLoad(as: UInt8.self)) }
            pointer.unlock()
        } catch {
            fail("bridge loop: \(error)")
        }
    }
    return checksum
}

/// The reference: the same fake ioctls (poll, DQBUF, QBUF) made directly on the backend, with
/// no pin, no pointers, no checks.
final class BareLoop {
    let backend: SimulatedV4L2Backend
    let fd: Int32
    var mappings: [UnsafeMutableRawPointer] = []

    init(backend: SimulatedV4L2Backend, count: UInt32) {
        self.backend = backend
        guard case .success(let fd) = backend.open(path: devicePath, flags: O_RDWR | O_NONBLOCK) else { fail("open") }
        self.fd = fd
        var request = v4l2_requestbuffers()
        request.count = count
        request.type = BufferType.videoCapture.rawValue
        request.memory = MemoryKind.mmap.rawValue
        guard backend.ioctl(fd, request: CV4L2_VIDIOC_REQBUFS, argument: &request) == nil else { fail("REQBUFS") }
        for index in 0..<request.count {
            var buffer = v4l2_buffer()
            buffer.index = index
            buffer.type = request.type
            buffer.memory = request.memory
            guard backend.ioctl(fd, request: CV4L2_VIDIOC_QUERYBUF, argument: &buffer) == nil else { fail("QUERYBUF") }
            guard case .success(let address) = backend.mmap(fd, length: Int(buffer.length), protection: PROT_READ | PROT_WRITE,
                                                             offset: Int64(buffer.m.offset)) else { fail("mmap") }
            mappings.append(address)
            guard backend.ioctl(fd, request: CV4L2_VIDIOC_QBUF, argument: &buffer) == nil else { fail("QBUF") }
        }
        var type = Int32(request.type)
        guard backend.ioctl(fd, request: CV4L2_VIDIOC_STREAMON, argument: &type) == nil else { fail("STREAMON") }
    }

    /// poll, DQBUF, read a byte of the frame if `reads`, QBUF.
    @inline(never)
    func run(frames: Int, reads: Bool = true) -> Int {
        var checksum = 0
        var done = 0
        while done < frames {
            guard case .success(let events) = backend.poll(fd, events: Int16(POLLIN), timeoutMilliseconds: 1000), events != 0 else {
                fail("bare loop: poll")
            }
            var buffer = v4l2_buffer()
            buffer.type = BufferType.videoCapture.rawValue
            buffer.memory = MemoryKind.mmap.rawValue
            if let errno = backend.ioctl(fd, request: CV4L2_VIDIOC_DQBUF, argument: &buffer) {
                if errno == .resourceTemporarilyUnavailable { continue }
                fail("bare loop: DQBUF \(errno)")
            }
            if reads { checksum &+= Int(mappings[Int(buffer.index)].load(as: UInt8.self)) } else { checksum &+= Int(buffer.sequence & 1) }
            guard backend.ioctl(fd, request: CV4L2_VIDIOC_QBUF, argument: &buffer) == nil else { fail("bare loop: QBUF") }
            done += 1
        }
        return checksum
    }
}

func startPin(_ backend: SimulatedV4L2Backend, frames: Int) -> CapturePin {
    do {
        let device = try VideoDevice(path: devicePath, backend: backend)
        let pin = try CapturePin(device: device, configuration: PinConfiguration(width: 640, height: 360))
        try pin.start(AllocatorSelection(frameCount: frames))
        return pin
    } catch {
        fail("\(error)")
    }
}

let mode = CommandLine.arguments.dropFirst().first ?? "all"
var sink = 0

if mode == "mjpeg" { runMJPEGBench() }
if mode == "png-convert" { runPictureBench() }

if mode == "allocations" || mode == "all" {
    let frames = argument("--frames", default: 1000)
    // The counter must see allocations, or a 0 below would mean nothing.
    let before = cmalloc_counter_allocations()
    var arrays: [[Int]] = []
    for i in 0..<100 { arrays.append([i, i + 1]) }
    sink &+= arrays.count
    let counted = cmalloc_counter_allocations() - before
    guard counted >= 100 else { fail("the malloc counter saw \(counted) of at least 100 allocations; it is not interposed") }
    print("counter check: 100 small arrays counted as \(counted) allocations")

    // The locked-read pattern (next, lock, read, unlock, release), then the dump loop's
    // (next(keepLeadingEdge: false), read the metadata, release).
    for (name, loop) in [("heap-allocations-per-frame", runBridge), ("heap-allocations-per-frame-chain", runChain)] {
        let pin = startPin(makeBackend(fills: true), frames: 4)
        sink &+= loop(pin, 200) // warm up: first-use allocations
        let start = cmalloc_counter_allocations()
        sink &+= loop(pin, frames)
        let allocations = cmalloc_counter_allocations() - start
        let stats = pin.statistics
        pin.stop()
        print("figure: \(name) value \(Double(allocations) / Double(frames)) reference 0 frames \(frames) total \(allocations) delivered \(stats.delivered)")
    }

    // The same locked-read loop on an MJPEG camera: every frame's markers are validated.
    do {
        let backend = SimulatedV4L2Backend(path: devicePath, configuration: SimulatedDeviceConfiguration(
            initialPixelFormat: .mjpeg, initialWidth: 640, initialHeight: 360, production: .onDemand, mjpeg: SimulatedMJPEG()))
        let pin = startPin(backend, frames: 4)
        sink &+= runBridge(pin, frames: 200)
        let start = cmalloc_counter_allocations()
        sink &+= runBridge(pin, frames: frames)
        let allocations = cmalloc_counter_allocations() - start
        let stats = pin.statistics
        pin.stop()
        guard pin.framing.isCompressed, stats.corruptSkipped == 0 else { fail("mjpeg: not a compressed stream or corrupt frames") }
        print("figure: heap-allocations-per-frame-mjpeg value \(Double(allocations) / Double(frames)) reference 0 frames \(frames) total \(allocations) delivered \(stats.delivered)")
    }
}

/// Best-of-`runs` ns per frame of `bridge` and `bare`, alternating them so drift hits both.
func compare(frames: Int, runs: Int, bare: (Int) -> Int, bridge: (Int) -> Int) -> (bridgeNs: Double, bareNs: Double, ratios: [Double]) {
    var sink = bare(1000)
    sink &+= bridge(1000)
    var bestBare = UInt64.max
    var bestBridge = UInt64.max
    var ratios: [Double] = []
    for _ in 0..<runs {
        var t0 = monotonicNanoseconds()
        sink &+= bare(frames)
        let bareTime = monotonicNanoseconds() - t0
        t0 = monotonicNanoseconds()
        sink &+= bridge(frames)
        let bridgeTime = monotonicNanoseconds() - t0
        bestBare = min(bestBare, bareTime)
        bestBridge = min(bestBridge, bridgeTime)
        ratios.append(Double(bridgeTime) / Double(bareTime))
    }
    ratios.sort()
    if sink == 42 { print("") }
    return (Double(bestBridge) / Double(frames), Double(bestBare) / Double(frames), ratios)
}

func report(_ name: String, _ result: (bridgeNs: Double, bareNs: Double, ratios: [Double]), runs: Int, frames: Int) {
    print("figure: \(name) value \(result.bridgeNs) reference \(result.bareNs) ratio-best \(result.bridgeNs / result.bareNs) ratio-median \(result.ratios[result.ratios.count / 2]) ratio-min \(result.ratios.first!) ratio-max \(result.ratios.last!) runs \(runs) frames \(frames)")
}

if mode == "overhead" || mode == "all" {
    let frames = argument("--frames", default: 100_000)
    let runs = argument("--runs", default: 11)
    let bare = BareLoop(backend: makeBackend(fills: false), count: 4)
    let chainPin = startPin(makeBackend(fills: false), frames: 4)
    report("ns-per-frame", compare(frames: frames, runs: runs, bare: { bare.run(frames: $0, reads: false) },
                                   bridge: { runChain(chainPin, frames: $0) }), runs: runs, frames: frames)
    chainPin.stop()
    let lockedPin = startPin(makeBackend(fills: false), frames: 4)
    report("ns-per-frame-locked", compare(frames: frames, runs: runs, bare: { bare.run(frames: $0, reads: true) },
                                          bridge: { runBridge(lockedPin, frames: $0) }), runs: runs, frames: frames)
    lockedPin.stop()
}
if mode == "bare" || mode == "chain" {
    // For profilers (perf record): one loop alone, no alternation.
    let frames = argument("--frames", default: 1_000_000)
    let backend = makeBackend(fills: false)
    let pin = mode == "chain" ? startPin(backend, frames: 4) : nil
    let bare = mode == "bare" ? BareLoop(backend: backend, count: 4) : nil
    let t0 = monotonicNanoseconds()
    if let pin { sink &+= runChain(pin, frames: frames) } else if let bare { sink &+= bare.run(frames: frames, reads: false) }
    print("\(mode): \(Double(monotonicNanoseconds() - t0) / Double(frames)) ns per frame")
    pin?.stop()
}
if mode == "session" {
    // Two captures, N and 2N frames: the difference is N frames of the loop without set-up.
    let frames = argument("--frames", default: 100_000)
    func capture(_ count: Int) -> UInt64 {
        let backend = makeBackend(fills: false)
        let options = CaptureOptions(devicePath: devicePath, backend: backend, count: count,
                                     format: FormatOptions(width: 640, height: 360), outputPath: "/dev/null")
        let t0 = monotonicNanoseconds()
        let session = CaptureSession(options: options, stopFlag: StopFlag())
        let result = Result { () throws(FrameDumpError) -> CaptureSummary in try session.run() }
        if case .failure(let error) = result { fail("session: \(error)") }
        return monotonicNanoseconds() - t0
    }
    let short = capture(frames), long = capture(2 * frames)
    print("session: \(Double(long &- short) / Double(frames)) ns per frame")
}
if mode == "write-floor" {
    let bytes = argument("--bytes", default: 1280 * 720 * 2)
    let frames = argument("--frames", default: 300)
    let arguments = CommandLine.arguments
    guard let flag = arguments.firstIndex(of: "-o"), flag + 1 < arguments.count else {
        fail("write-floor: give the output file with -o FILE")
    }
    let path = arguments[flag + 1]
    guard bytes > 0, frames > 0 else { fail("write-floor: --bytes and --frames must be positive") }
    // A frame in memory, faulted in before the clock starts (as a capture buffer is).
    let frame = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
    frame.initializeMemory(as: UInt8.self, repeating: 0x80, count: bytes)
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { fail("write-floor: open \(path): errno \(errno)") }
    func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }
    let start = cpuSeconds()
    for _ in 0..<frames {
        var written = 0
        while written < bytes {
            let result = write(fd, frame + written, bytes - written)
            if result < 0 && errno == EINTR { continue }
            guard result > 0 else { fail("write-floor: write \(path): errno \(errno)") }
            written += result
        }
    }
    let cpu = cpuSeconds() - start
    close(fd)
    frame.deallocate()
    print("figure: write-floor cpu-seconds \(cpu) frames \(frames) bytes \(bytes)")
}
if sink == 42 { print("") }
