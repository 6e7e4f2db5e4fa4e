import DequeModule
import SystemPackage
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// What a connection counted.
public struct ConnectionStatistics: Hashable, Sendable, Codable {
    /// Frames handed to the device's OUTPUT queue.
    public var framesSent = 0
    /// OUTPUT buffers the device gave back (a frame it is done with).
    public var framesReturned = 0
    /// The most frames the device held at once.
    public var inFlightMaximum = 0
    /// Frames the copy could not send: every OUTPUT buffer was still busy when the wait ended.
    public var framesRefused = 0
    /// Frames copied (the copy kind), and their bytes.
    public var framesCopied = 0
    public var bytesCopied = 0
    /// Buffers the device produced on CAPTURE, and their payload bytes.
    public var results = 0
    public var resultBytes = 0
    /// Results whose timestamp is the timestamp of a frame sent (V4L2_BUF_FLAG_TIMESTAMP_COPY),
    /// and those that match none.
    public var resultsMatched = 0
    public var resultsUnmatched = 0
    /// OUTPUT buffers the driver gave back with an index that is not ours or not busy.
    public var driverViolations = 0

    public init() {}
}

/// A connection from a capture pin to a memory-to-memory device (an encoder, a decoder fed
/// by a camera, a scaler or a converter): the V4L2 analog of a kernel-mode AVStream connection.
///
/// The device's OUTPUT queue is the connection's input pin, with its own framing; its CAPTURE
/// queue is ``results``, a ``CapturePin`` like any other. How frames cross is chosen per
/// connection by ``ConnectionSelection`` from both ends' framing (``ConnectionKind``): the
/// capture buffers exported to the device, the device's buffers imported by the capture queue,
/// or a copy. A rejected kind is never set up; ``selection`` has the reasons.
///
/// A frame sent without a copy stays held (its stream pointer is kept) while the device has
/// it: it goes back to the capture queue when the device returns the OUTPUT buffer. Buffer
/// index `i` on one side is index `i` on the other, so a captured frame always finds its OUTPUT
/// buffer free. Each frame's timestamp is set on its OUTPUT buffer; the device copies it to the
/// result made from it.
///
/// Use it from one thread: ``start()``, then ``send(_:timeout:deliver:)`` for each captured frame and
/// ``collect(timeout:deliver:)`` for the results, ``finish(timeout:deliver:)`` to drain.
public final class MemoryToMemoryConnection {
    public let source: CapturePin
    public let device: VideoDevice
    public let queues: MemoryToMemoryQueues
    /// The device's CAPTURE queue: what it produces.
    public let results: CapturePin
    /// Encoder, decoder or converter, from the formats on each side.
    public let role: MemoryToMemoryRole?
    /// The format set on the device's OUTPUT queue (the captured frames').
    public let outputFormat: ImageFormat
    /// The OUTPUT queue's framing.
    public let outputFraming: AllocatorFraming
    public let selection: ConnectionSelectionResult
    public let kind: ConnectionKind
    public private(set) var statistics = ConnectionStatistics()

    private let frameCount: Int
    private let sourceSelection: AllocatorSelection
    /// Per OUTPUT index: the descriptor to queue it with, whether the device has it, and the
    /// captured frame it holds (dmabuf kinds).
    private var descriptors: [BufferDescriptor] = []
    private var busy: [Bool] = []
    private var held: [HeldFrame] = []
    /// The copy: each OUTPUT buffer's planes, mapped.
    private var mappings: [[UnsafeMutableRawBufferPointer]] = []
    /// The copy: bytes per line of each plane, on the capture side and on the OUTPUT side, read
    /// once at start rather than from the pin's locked state on every frame.
    private var sourceStrides: [Int] = []
    private var outputStrides: [Int] = []
    /// captureExported: the capture buffers' dmabufs, closed at stop.
    private var exported: [FileDescriptor] = []
    private var exporter: OutputQueueExporter?
    private var sentTimestamps = Deque<Int64>(minimumCapacity: 64)
    private var streaming = false
    private var inFlight = 0

    /// A captured frame the device holds.
    final class HeldFrame {
        var frame: StreamPointer?
    }

    /// Sets the device up for `source`'s frames and chooses how they cross.
    ///
    /// - Parameters:
    ///   - source: a capture pin, not streaming yet; the connection starts it.
    ///   - device: a memory-to-memory device.
    ///   - configuration: the CAPTURE side's format (an encoder's coded format, a converter's
    ///     output).
    ///   - preference: which connection kinds may be chosen.
    ///   - sourceSelection: how the source's frames are allocated when the chosen kind leaves
    ///     it free to choose (the copy); its frame count is used for every kind.
    ///   - sourceMemory: the memory kind the source is held to (USERPTR, a dmabuf of its own), if
    ///     it is; nil for MMAP, which every kind can use.
    public init(source: CapturePin, device: VideoDevice, results configuration: PinConfiguration,
                preference: ConnectionPreference = .auto, sourceSelection: AllocatorSelection = AllocatorSelection(),
                sourceMemory: MemoryKind? = nil) throws(CaptureError) {
        guard let queues = device.capabilities.memoryToMemoryQueues else {
            throw CaptureError(.invalidConfiguration,
                               "\(device.path): not a memory-to-memory device (capabilities: \(device.capabilities.deviceCapabilities.names.joined(separator: ", "))); `framedump list` names encoders and converters",
                               reason: .notMemoryToMemoryDevice)
        }
        guard !source.isStreaming else {
            throw CaptureError(.invalidState, "\(source.device.path): the source pin streams already; the connection starts it")
        }
        self.source = source
        self.device = device
        self.queues = queues
        self.sourceSelection = sourceSelection
        var resultsConfiguration = configuration
        resultsConfiguration.sourceChanges = .ignore
        // The encoder's order (dev-encoder.rst): the coded format on CAPTURE first, then OUTPUT.
        results = try CapturePin(device: device, configuration: resultsConfiguration)
        let sourceFormat = source.format
        var wanted = ImageFormat(bufferType: queues.output, width: sourceFormat.width, height: sourceFormat.height,
                                 pixelFormat: sourceFormat.pixelFormat)
        wanted.field = sourceFormat.field
        wanted.colorspace = sourceFormat.colorspace
        wanted.ycbcrEncoding = sourceFormat.ycbcrEncoding
        wanted.quantization = sourceFormat.quantization
        wanted.planes = queues.output.isMultiplanar ? sourceFormat.planes : Array(sourceFormat.planes.prefix(1))
        let granted: ImageFormat
        let framing: AllocatorFraming
        let description: MemoryToMemoryDescription?
        do throws(V4L2Error) {
            description = try device.memoryToMemoryDescription()
            granted = try device.setFormat(wanted)
            framing = try AllocatorFraming.query(device: device, bufferType: queues.output)
        } catch {
            throw CaptureError(error)
        }
        role = description?.role
        if granted.pixelFormat != sourceFormat.pixelFormat {
            let taken = description?.outputFormats.map(\.pixelFormat.description).joined(separator: ", ") ?? "?"
            throw CaptureError(.invalidConfiguration,
                               "\(device.path): VIDIOC_S_FMT (OUTPUT): it does not take \(sourceFormat.pixelFormat) from \(source.device.path) (it takes \(taken)); capture in one of those with --pixel-format",
                               reason: .formatNotSupported)
        }
        if granted.width != sourceFormat.width || granted.height != sourceFormat.height {
            throw CaptureError(.invalidConfiguration,
                               "\(device.path): VIDIOC_S_FMT (OUTPUT): it does not take \(sourceFormat.width)x\(sourceFormat.height) (it gives \(granted.width)x\(granted.height)); capture at another --size",
                               reason: .sizeNotSupported)
        }
        outputFormat = granted
        outputFraming = framing
        try results.reloadFormat()

        frameCount = sourceSelection.resolvedFrameCount(for: source.framing)
        let choice = ConnectionSelection(preference: preference).select(
            source: ConnectionEnd(framing: source.framing, format: sourceFormat, requiredMemory: sourceMemory, frameCount: frameCount),
            sink: ConnectionEnd(framing: framing, format: granted, frameCount: frameCount))
        selection = choice
        guard let chosen = choice.chosen else {
            let reasons = choice.rejections.map { "  \($0)" }.joined(separator: "\n")
            throw CaptureError(.allocator, "no connection from \(source.device.path) to \(device.path) fits (connection \(preference.rawValue)):\n\(reasons)",
                               reason: .noConnection)
        }
        kind = chosen
    }

    deinit {
        stop()
    }

    // MARK: - Starting and stopping

    /// Starts the source with the allocator the chosen kind needs, sets up the OUTPUT queue,
    /// and streams both of the device's queues.
    public func start() throws(CaptureError) {
        guard !streaming else { throw CaptureError(.invalidState, "\(device.path): the connection is already started") }
        var failure: CaptureError?
        do throws(CaptureError) {
            try setUp()
        } catch {
            failure = error
        }
        if let failure {
            stop()
            throw failure
        }
        streaming = true
    }

    private func setUp() throws(CaptureError) {
        let output = queues.output
        let planeCount = outputFraming.items.count
        var count: Int
        switch kind {
        case .captureExported:
            var selection = sourceSelection
            selection.candidates = []
            selection.frameCount = frameCount
            try source.start(selection)
            count = source.frameCount
            try requestOutput(count: count, memory: .dmabuf)
            for index in 0..<count {
                var descriptor = BufferDescriptor(index: UInt32(index), bufferType: output, memory: .dmabuf, planeCount: planeCount)
                let buffer = try v4l2 { () throws(V4L2Error) in
                    try source.device.queryBuffer(index: UInt32(index), bufferType: source.bufferType, memory: .mmap)
                }
                for plane in 0..<planeCount {
                    let fd = try v4l2 { () throws(V4L2Error) in
                        try source.device.exportBuffer(index: UInt32(index), plane: UInt32(plane), bufferType: source.bufferType)
                    }
                    exported.append(FileDescriptor(rawValue: fd))
                    descriptor.planes[plane].fd = fd
                    descriptor.planes[plane].length = buffer.planes[plane].length
                }
                descriptors.append(descriptor)
            }
        case .deviceExported:
            let exporter = OutputQueueExporter(device: device, bufferType: output)
            self.exporter = exporter
            let selection = AllocatorSelection(candidates: [DMABufAllocator(exporter: exporter)],
                                               consumer: ConsumerRequirements(needsCPUAccess: false, acceptsDeviceMemory: true),
                                               frameCount: frameCount)
            let chosen = try source.start(selection)
            if chosen.fellBackToDefault {
                throw CaptureError(.allocator, "\(source.device.path): cannot import \(device.path)'s OUTPUT buffers: \(chosen.rejections.map(\.description).joined(separator: "; "))",
                                   reason: .noConnection)
            }
            count = source.frameCount
            for index in 0..<count {
                var descriptor = try v4l2 { () throws(V4L2Error) in
                    try device.queryBuffer(index: UInt32(index), bufferType: output, memory: .mmap)
                }
                descriptor.planeCount = planeCount
                descriptors.append(descriptor)
            }
        case .copy:
            var selection = sourceSelection
            selection.frameCount = frameCount
            let chosen = try source.start(selection)
            if chosen.fellBackToDefault {
                throw CaptureError(.allocator, "\(source.device.path): the allocator asked for was rejected: \(chosen.rejections.map(\.description).joined(separator: "; "))")
            }
            count = frameCount
            count = try requestOutput(count: count, memory: .mmap)
            for index in 0..<count {
                var descriptor = try v4l2 { () throws(V4L2Error) in
                    try device.queryBuffer(index: UInt32(index), bufferType: output, memory: .mmap)
                }
                descriptor.planeCount = planeCount
                var planes: [UnsafeMutableRawBufferPointer] = []
                for plane in 0..<planeCount {
                    let length = Int(descriptor.planes[plane].length), offset = descriptor.planes[plane].mapOffset
                    planes.append(try v4l2 { () throws(V4L2Error) in try device.map(length: length, offset: offset) })
                }
                mappings.append(planes)
                descriptors.append(descriptor)
            }
            sourceStrides = source.format.planes.map { Int($0.bytesPerLine) }
            outputStrides = outputFormat.planes.map { Int($0.bytesPerLine) }
        }
        busy = Array(repeating: false, count: descriptors.count)
        held = (0..<descriptors.count).map { _ in HeldFrame() }
        try results.start()
        try v4l2 { () throws(V4L2Error) in try device.streamOn(output) }
    }

    /// REQBUFS on the OUTPUT queue; fewer than `count` is an error for the dmabuf kinds (one
    /// index per capture buffer).
    @discardableResult
    private func requestOutput(count: Int, memory: MemoryKind) throws(CaptureError) -> Int {
        let granted = try v4l2 { () throws(V4L2Error) in
            try device.requestBuffers(count: UInt32(count), bufferType: queues.output, memory: memory)
        }
        guard granted.count > 0, memory == .mmap || Int(granted.count) >= count else {
            throw CaptureError(.allocator, "\(device.path): VIDIOC_REQBUFS (OUTPUT, \(memory)) granted \(granted.count) of \(count) buffers")
        }
        return Int(granted.count)
    }

    /// Stops the device's queues and the source, gives every held frame back and frees the
    /// buffers. Safe to call more than once.
    public func stop() {
        _ = try? device.streamOff(queues.output)
        for holder in held { holder.frame = nil }
        busy = busy.map { _ in false }
        inFlight = 0
        results.stop()
        source.stop()
        for planes in mappings { for mapping in planes { device.unmap(mapping) } }
        mappings = []
        if kind != .deviceExported {
            _ = try? device.requestBuffers(count: 0, bufferType: queues.output, memory: kind == .copy ? .mmap : .dmabuf)
        }
        for fd in exported { try? fd.close() }
        exported = []
        descriptors = []
        held = []
        busy = []
        streaming = false
    }

    // MARK: - Frames

    /// Hands `frame` to the device. A dmabuf kind keeps the pointer until the device returns the
    /// buffer; the copy copies it and lets it go. While the copy waits for a free OUTPUT buffer,
    /// results that come are passed to `deliver`.
    ///
    /// - Returns: false when the copy found no free OUTPUT buffer within `timeout` (the frame is
    ///   counted in ``ConnectionStatistics/framesRefused``).
    @discardableResult
    public func send(_ frame: consuming StreamPointer, timeout: Duration = .seconds(2),
                     deliver: (inout StreamPointer) throws -> Void) throws -> Bool {
        guard streaming else { throw CaptureError(.invalidState, "\(device.path): the connection is not started") }
        try reclaim()
        let info = frame.info
        let index: Int
        switch kind {
        case .captureExported, .deviceExported:
            index = info.index
            guard index >= 0, index < descriptors.count, !busy[index] else {
                throw CaptureError(.driverViolation, "\(source.device.path): captured buffer \(index) has no free OUTPUT buffer on \(device.path) (\(descriptors.count) buffers)")
            }
            for plane in 0..<min(info.planeCount, descriptors[index].planeCount) {
                descriptors[index].planes[plane].bytesUsed = UInt32(info.planes[plane].bytesUsed)
                descriptors[index].planes[plane].dataOffset = UInt32(info.planes[plane].dataOffset)
            }
            held[index].frame = consume frame
        case .copy:
            guard let free = try waitForFreeOutput(timeout: timeout, deliver: deliver) else {
                statistics.framesRefused += 1
                return false
            }
            index = free
            var frame = frame
            let copied = try frame.withLockedPayload { (payload: borrowing FramePayload) -> Int in
                copy(payload, into: index)
            }
            statistics.framesCopied += 1
            statistics.bytesCopied += copied
        }
        descriptors[index].timestampNanoseconds = info.timestampNanoseconds
        descriptors[index].field = info.field
        do {
            try descriptors.withUnsafeBufferPointer { (all) throws(V4L2Error) in
                try device.queue(descriptorAt: all.baseAddress! + index)
            }
        } catch {
            held[index].frame = nil
            throw CaptureError(.device, "\(device.path): VIDIOC_QBUF (OUTPUT buffer \(index), \(kind)) failed: \(error)", underlying: error)
        }
        busy[index] = true
        inFlight += 1
        statistics.framesSent += 1
        statistics.inFlightMaximum = max(statistics.inFlightMaximum, inFlight)
        if sentTimestamps.count >= 256 { sentTimestamps.removeFirst() }
        // Microseconds: the timestamp crosses the device as a struct timeval.
        sentTimestamps.append(info.timestampNanoseconds / 1_000 * 1_000)
        return true
    }

    /// Copies the payload's planes into OUTPUT buffer `index`, line by line when the strides
    /// differ. Returns the bytes copied.
    private func copy(_ payload: borrowing FramePayload, into index: Int) -> Int {
        var total = 0
        for plane in 0..<min(payload.planeCount, mappings[index].count) {
            let from = payload.unsafePlaneBytes(plane)
            let to = mappings[index][plane]
            let fromStride = sourceStrides[safe: plane] ?? 0
            let toStride = outputStrides[safe: plane] ?? 0
            let used: Int
            if fromStride == toStride || fromStride == 0 || toStride == 0 {
                used = min(from.count, to.count)
                if used > 0 { to.baseAddress!.copyMemory(from: from.baseAddress!, byteCount: used) }
            } else {
                let line = min(fromStride, toStride)
                let rows = min(from.count / fromStride, to.count / toStride)
                for row in 0..<rows {
                    (to.baseAddress! + row * toStride).copyMemory(from: from.baseAddress! + row * fromStride, byteCount: line)
                }
                used = rows * toStride
            }
            descriptors[index].planes[plane].bytesUsed = UInt32(used)
            descriptors[index].planes[plane].dataOffset = 0
            total += used
        }
        return total
    }

    /// The copy: the first free OUTPUT buffer, waiting (poll on the device) for one the device
    /// returns; results that come meanwhile go to `deliver`.
    private func waitForFreeOutput(timeout: Duration, deliver: (inout StreamPointer) throws -> Void) throws -> Int? {
        var deadline = WaitDeadline(timeout)
        while true {
            if let free = busy.firstIndex(of: false) { return free }
            let events = try v4l2 { () throws(V4L2Error) in
                try device.poll(events: [.output, .input], timeoutMilliseconds: deadline.pollMilliseconds())
            }
            if events.contains(.input) { _ = try collect(timeout: .zero, deliver: deliver) }
            try reclaim()
            if busy.firstIndex(of: false) == nil, deadline.hasPassed { return nil }
            deadline.timePassed()
        }
    }

    /// Takes back the OUTPUT buffers the device is done with: their frames are released (and go
    /// back to the capture queue).
    public func reclaim() throws(CaptureError) {
        guard streaming else { return }
        let planeCount = max(1, outputFraming.items.count)
        var done = BufferDescriptor(index: 0, bufferType: queues.output, memory: kind == .captureExported ? .dmabuf : .mmap,
                                    planeCount: queues.output.isMultiplanar ? planeCount : 1)
        while true {
            let dequeued: Bool
            do {
                dequeued = try device.dequeue(into: &done)
            } catch {
                if error.errno == .brokenPipe { return }
                throw CaptureError(.device, "\(device.path): VIDIOC_DQBUF (OUTPUT) failed: \(error)", underlying: error)
            }
            guard dequeued else { return }
            let index = Int(done.index)
            guard index < busy.count, busy[index] else {
                statistics.driverViolations += 1
                continue
            }
            busy[index] = false
            inFlight -= 1
            statistics.framesReturned += 1
            held[index].frame = nil
        }
    }

    /// Waits up to `timeout` for results and passes each to `deliver`; also takes back the OUTPUT
    /// buffers the device returned. Returns the number of results delivered; throws
    /// ``CaptureError/Kind/endOfStream`` after a drain's last buffer.
    @discardableResult
    public func collect(timeout: Duration, deliver: (inout StreamPointer) throws -> Void) throws -> Int {
        var delivered = 0
        var wait = timeout
        while true {
            try reclaim()
            guard var result = try results.next(timeout: wait, keepLeadingEdge: false) else { break }
            let info = result.info
            statistics.results += 1
            statistics.resultBytes += info.payloadSize
            if let position = sentTimestamps.firstIndex(of: info.timestampNanoseconds / 1_000 * 1_000) {
                sentTimestamps.removeFirst(position + 1)
                statistics.resultsMatched += 1
            } else {
                statistics.resultsUnmatched += 1
            }
            try deliver(&result)
            delivered += 1
            wait = .zero
        }
        try reclaim()
        return delivered
    }

    /// Drains the device: an encoder is told V4L2_ENC_CMD_STOP and read up to its last buffer
    /// (LAST flag, then EPIPE); a converter is read until it has given a result for every frame
    /// sent. Then the connection stops. No frame sent is lost: fewer results than frames is an
    /// error.
    public func finish(timeout: Duration = .seconds(10), deliver: (inout StreamPointer) throws -> Void) throws {
        guard streaming else { return }
        var deadline = WaitDeadline(timeout)
        let drains = (try? device.tryEncoderCommand(.stop)) != nil
        if drains {
            do throws(V4L2Error) {
                try device.encoderCommand(.stop)
            } catch {
                throw CaptureError(.device, "\(device.path): VIDIOC_ENCODER_CMD (V4L2_ENC_CMD_STOP) failed: \(error)", underlying: error)
            }
        }
        while drains || statistics.results < statistics.framesSent {
            do {
                try collect(timeout: .milliseconds(max(1, Int64(deadline.pollMilliseconds()))), deliver: deliver)
            } catch let error as CaptureError where error.kind == .endOfStream {
                break
            }
            if deadline.hasPassed {
                throw CaptureError(.device, "\(device.path): the drain did not end within \(timeout): \(statistics.results) results for \(statistics.framesSent) frames sent")
            }
            deadline.timePassed()
        }
        try reclaim()
        stop()
    }

    private func v4l2<T>(_ body: () throws(V4L2Error) -> T) throws(CaptureError) -> T {
        do {
            return try body()
        } catch {
            throw CaptureError(error)
        }
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}

/// The device's OUTPUT buffers (MMAP) as dmabufs (VIDIOC_EXPBUF), for the capture queue to
/// import: ``ConnectionKind/deviceExported``. The same open file as the connection's, since a
/// memory-to-memory device's queues belong to the file.
final class OutputQueueExporter: DMABufExporter, @unchecked Sendable {
    let device: VideoDevice
    let bufferType: BufferType

    init(device: VideoDevice, bufferType: BufferType) {
        self.device = device
        self.bufferType = bufferType
    }

    var name: String { "\(device.path) OUTPUT" }

    func export(count: Int, planeSizes: [Int]) throws(CaptureError) -> [[(fd: Int32, size: Int)]] {
        let path = device.path
        return try exportMMAPBuffers(
            of: device, bufferType: bufferType, count: count, planeSizes: planeSizes,
            failed: { CaptureError(.allocator, "\(path): exporting the OUTPUT buffers: \($0)", underlying: $0) },
            tooSmall: { CaptureError(.allocator, "\(path): its OUTPUT buffers (\($0) bytes) are smaller than the captured frames (\(planeSizes) bytes)") })
    }

    func release() {
        _ = try? device.requestBuffers(count: 0, bufferType: bufferType, memory: .mmap)
    }
}
