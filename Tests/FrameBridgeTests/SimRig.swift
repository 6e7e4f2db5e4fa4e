// FrameBridgeTests' helpers: SimRig (a pin on a simulated device) and its layouts and allocators,
// payload checks against the simulator's pattern, an offer-only allocator, a seeded generator.
import CV4L2
import FrameBridge
import Foundation
import Synchronization
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The simulated capture device every test streams from.
let capturePath = "/dev/video0"
/// A second simulated device whose MMAP buffers are exported as dmabufs.
let exporterPath = "/dev/video1"

/// The two queue layouts the pin handles.
enum Layout: String, CaseIterable, Sendable {
    /// V4L2_BUF_TYPE_VIDEO_CAPTURE, YUYV, one plane, no data_offset.
    case singlePlanar
    /// V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, NM12 (two planes), 128 bytes of data_offset in plane 0.
    case multiPlanar

    var isMultiplanar: Bool { self == .multiPlanar }
    var dataOffset: UInt32 { isMultiplanar ? 128 : 0 }
    var pixelFormat: FourCC { isMultiplanar ? .nv12m : .yuyv }
    var planeCount: Int { isMultiplanar ? 2 : 1 }
    var bufferType: BufferType { isMultiplanar ? .videoCaptureMultiplanar : .videoCapture }

    /// sizeimage of each plane for `width` x `height` (plane 0 includes the data_offset).
    func sizeImages(width: Int, height: Int) -> [Int] {
        isMultiplanar ? [width * height + Int(dataOffset), width * height / 2] : [width * height * 2]
    }

    /// bytesperline of each plane.
    func bytesPerLine(width: Int) -> [Int] {
        isMultiplanar ? [width, width] : [width * 2]
    }

    func deviceConfiguration(memoryKinds: Set<MemoryKind> = [.mmap, .userPointer, .dmabuf], minimumBuffers: UInt32 = 2,
                             production: SimulatedFrameProduction = .onDemand) -> SimulatedDeviceConfiguration {
        SimulatedDeviceConfiguration(
            multiplanar: isMultiplanar, memoryKinds: memoryKinds, minimumBuffers: minimumBuffers, dataOffset: dataOffset,
            frameSizes: .discrete([SimulatedFrameSize(width: 160, height: 120), SimulatedFrameSize(width: 320, height: 180),
                                   SimulatedFrameSize(width: 640, height: 360)]),
            initialPixelFormat: pixelFormat, initialWidth: 320, initialHeight: 180, production: production)
    }
}

/// The allocators under test.
enum AllocatorKind: String, CaseIterable, Sendable {
    case kernelPool, userPointer, dmabuf

    var memory: MemoryKind {
        switch self {
        case .kernelPool: return .mmap
        case .userPointer: return .userPointer
        case .dmabuf: return .dmabuf
        }
    }
}

/// A simulator backend with a capture device at ``capturePath`` (and an identical device at
/// ``exporterPath`` to export dmabufs from), the device opened, and a pin on it.
final class SimRig: Sendable {
    let layout: Layout
    let backend: SimulatedV4L2Backend
    let device: VideoDevice
    let pin: CapturePin
    let width: Int
    let height: Int

    init(_ layout: Layout, width: Int = 320, height: Int = 180,
         memoryKinds: Set<MemoryKind> = [.mmap, .userPointer, .dmabuf], minimumBuffers: UInt32 = 2,
         production: SimulatedFrameProduction = .onDemand, trailingWindow: Int = 0,
         starvationPolicy: StarvationPolicy = .block, errorFramePolicy: ErrorFramePolicy = .deliver) throws {
        self.layout = layout
        self.width = width
        self.height = height
        backend = SimulatedV4L2Backend()
        backend.addDevice(path: capturePath, configuration: layout.deviceConfiguration(
            memoryKinds: memoryKinds, minimumBuffers: minimumBuffers, production: production))
        backend.addDevice(path: exporterPath, configuration: layout.deviceConfiguration(production: .manual))
        device = try VideoDevice(path: capturePath, backend: backend)
        pin = try CapturePin(device: device, configuration: PinConfiguration(
            pixelFormat: layout.pixelFormat, width: UInt32(width), height: UInt32(height), trailingWindow: trailingWindow,
            starvationPolicy: starvationPolicy, errorFramePolicy: errorFramePolicy))
    }

    /// The capture device's queue in the simulator.
    var queue: SimulatedQueueState { backend.queueState(path: capturePath)! }
    /// The exporting device's queue in the simulator.
    var exporterQueue: SimulatedQueueState { backend.queueState(path: exporterPath)! }

    /// How many times `request` was issued on the capture device.
    func count(_ request: UInt) -> Int { backend.ioctlCount(path: capturePath, request: request) }

    func inject(_ fault: SimulatedFault) { XCTAssertTrue(backend.injectFault(fault, path: capturePath)) }

    var sizeImages: [Int] { layout.sizeImages(width: width, height: height) }

    /// The payload size of each plane (sizeimage minus plane 0's data_offset).
    var payloadSizes: [Int] {
        sizeImages.enumerated().map { $0.offset == 0 ? $0.element - Int(layout.dataOffset) : $0.element }
    }

    func makeAllocator(_ kind: AllocatorKind) -> any AllocatorDispatch {
        switch kind {
        case .kernelPool: return KernelPoolAllocator()
        case .userPointer: return UserPointerAllocator()
        case .dmabuf: return DMABufAllocator(exporter: V4L2BufferExporter(path: exporterPath, format: pin.format, backend: backend))
        }
    }

    func selection(_ kind: AllocatorKind, frameCount: Int? = nil) -> AllocatorSelection {
        AllocatorSelection(candidates: [makeAllocator(kind)], consumer: ConsumerRequirements(acceptsDeviceMemory: kind == .dmabuf),
                           frameCount: frameCount)
    }

    /// Why the pin's and the simulator's views of the buffers disagree, or nil when every
    /// buffer is in exactly one state: queued (to be filled or filled) in the driver, or
    /// held/free in user space.
    func accountingProblem() -> String? {
        let counts = pin.bufferCounts
        let state = queue
        let total = counts.queued + counts.held + counts.free
        if total != state.bufferCount {
            return "pin has \(total) buffers (\(counts)), the driver \(state.bufferCount)"
        }
        if counts.queued != state.queuedCount + state.filledCount {
            return "pin thinks \(counts.queued) are queued, the driver has \(state.queuedCount) queued + \(state.filledCount) filled (\(counts))"
        }
        if counts.held + counts.free != state.dequeuedCount {
            return "pin holds \(counts.held) + \(counts.free) free, the driver handed out \(state.dequeuedCount) (\(state.dequeuedIndexes))"
        }
        return nil
    }

    func assertAccounted(_ context: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line) {
        if let problem = accountingProblem() {
            XCTFail("buffer accounting \(context()): \(problem)", file: file, line: line)
        }
    }

    /// Nothing of a stream is left: no buffers on either device, no mappings, no exported fds.
    func assertTornDown(_ context: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line) {
        let context = context()
        XCTAssertNil(pin.allocator, "\(context): the allocator was not deleted", file: file, line: line)
        XCTAssertEqual(queue.bufferCount, 0, "\(context): buffers left on the capture device", file: file, line: line)
        XCTAssertEqual(exporterQueue.bufferCount, 0, "\(context): buffers left on the exporter", file: file, line: line)
        XCTAssertEqual(backend.liveMappingCount, 0, "\(context): mappings of simulated buffers leaked", file: file, line: line)
        XCTAssertEqual(backend.internalMappingCount, 0, "\(context): the simulator still maps buffers (dmabufs attached?)", file: file, line: line)
        XCTAssertEqual(backend.openDescriptorCount(path: exporterPath), 0, "\(context): the exporter device is still open", file: file, line: line)
        XCTAssertEqual(pin.livePointers, 0, "\(context): stream pointers alive", file: file, line: line)
    }
}

// MARK: - Pattern checks

/// The offset of the first byte of `bytes` that differs from the simulator's pattern, or nil.
/// Compares against a pattern generated into scratch memory (fast); on a mismatch finds the byte.
func patternMismatch(_ bytes: UnsafeRawBufferPointer, sequence: UInt32, plane: Int, startOffset: Int) -> Int? {
    guard bytes.count > 0, let base = bytes.baseAddress else { return nil }
    let expected = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
    defer { expected.deallocate() }
    SimulatedPattern.fill(expected, sequence: sequence, plane: plane, startOffset: startOffset)
    if memcmp(expected.baseAddress!, base, bytes.count) == 0 { return nil }
    return SimulatedPattern.firstMismatch(in: bytes, sequence: sequence, plane: plane, startOffset: startOffset) ?? -1
}

/// Why a locked frame's bytes are not what the simulator wrote, or nil: every plane's payload
/// (from data_offset) has `payloadSizes[p]` bytes of the pattern of the frame's sequence, and
/// the data_offset header of plane 0 is the pattern too.
func payloadProblem(_ payload: borrowing FramePayload, payloadSizes: [Int]) -> String? {
    let sequence = payload.info.sequence
    guard payload.planeCount == payloadSizes.count else {
        return "frame \(sequence) has \(payload.planeCount) planes, expected \(payloadSizes.count)"
    }
    for p in 0..<payload.planeCount {
        let info = payload.info.planes[p]
        let bytes = payload.plane(p)
        if bytes.byteCount != payloadSizes[p] {
            return "frame \(sequence) plane \(p): payload of \(bytes.byteCount) bytes, expected \(payloadSizes[p])"
        }
        if let offset = bytes.withUnsafeBytes({ patternMismatch($0, sequence: sequence, plane: p, startOffset: info.dataOffset) }) {
            return "frame \(sequence) plane \(p): payload differs from the pattern at byte \(offset) (data_offset \(info.dataOffset))"
        }
        if info.dataOffset > 0 {
            let memory = payload.unsafePlaneMemory(p)
            guard memory.count >= info.dataOffset else { return "frame \(sequence) plane \(p): memory smaller than data_offset" }
            let header = UnsafeRawBufferPointer(rebasing: memory[0..<info.dataOffset])
            if let offset = patternMismatch(header, sequence: sequence, plane: p, startOffset: 0) {
                return "frame \(sequence) plane \(p): data_offset header differs from the pattern at byte \(offset)"
            }
        }
    }
    return nil
}

/// The steps a full stream of `count` frames goes through.
func fullLifecycle(_ count: Int) -> [String] {
    ["initialize"] + Array(repeating: "allocate", count: count) + Array(repeating: "free", count: count) + ["delete"]
}

/// An allocator that only declares an offer (for selection checks); it fails if initialized.
final class OfferOnlyAllocator: AllocatorDispatch {
    let name: String
    let offer: AllocatorOffer

    init(name: String, offer: AllocatorOffer) {
        self.name = name
        self.offer = offer
    }

    func initialize(queue: PinQueue, framing: AllocatorFraming, frameCount: Int) throws(CaptureError) -> Int {
        throw CaptureError(.allocator, "\(name) must never be initialized")
    }
    func allocate(index: Int) throws(CaptureError) -> FrameMemory { throw CaptureError(.allocator, "\(name): allocate") }
    func free(index: Int, memory: FrameMemory) {}
    func delete() {}
}

// MARK: - Randomness and process resources

/// SplitMix64: a small, fixed-seed generator so the fuzz test is reproducible.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Catches the ``CaptureError`` a call throws, failing the test when it does not throw.
func expectCaptureError<T>(_ body: () throws(CaptureError) -> T, _ message: @autoclosure () -> String = "",
                           file: StaticString = #filePath, line: UInt = #line) -> CaptureError? {
    expectError(body, message(), file: file, line: line)
}

/// Milliseconds since `start`.
func milliseconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
}
