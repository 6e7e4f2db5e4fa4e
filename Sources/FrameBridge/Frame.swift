import V4L2

/// One plane of a captured frame as the driver reported it.
public struct FramePlaneInfo: Hashable, Sendable {
    private var storedBytesUsed: UInt32
    private var storedDataOffset: UInt32
    private var storedLength: UInt32

    init(bytesUsed: UInt32, dataOffset: UInt32, length: UInt32) {
        storedBytesUsed = bytesUsed
        storedDataOffset = dataOffset
        storedLength = length
    }

    /// Bytes the driver wrote, including `dataOffset`.
    public var bytesUsed: Int { Int(storedBytesUsed) }
    /// Where the payload starts.
    public var dataOffset: Int { Int(storedDataOffset) }
    /// Size of the plane's memory.
    public var length: Int { Int(storedLength) }
    /// The payload size: `bytesUsed - dataOffset`.
    public var payloadSize: Int { bytesUsed - dataOffset }
}

/// The metadata of a captured frame (from `struct v4l2_buffer` and its planes).
public struct FrameInfo: Sendable {
    /// The buffer index.
    public var index: Int
    /// The driver's sequence number.
    public var sequence: UInt32
    /// Capture time in nanoseconds (CLOCK_MONOTONIC when `isMonotonic`).
    public var timestampNanoseconds: Int64
    /// `enum v4l2_field` (1 = progressive).
    public var field: UInt32
    public var flags: BufferFlags
    /// Frames the driver skipped just before this one (a gap in sequence numbers).
    public var droppedBefore: UInt32
    public var planeCount: Int
    public var planes: InlineArray<8, FramePlaneInfo>
    /// What validation found wrong with a compressed frame (empty with ``CorruptFramePolicy/skip``,
    /// which delivers only sound frames, and for uncompressed formats).
    public var defects: CompressedFrameDefects
    /// The pin's ``CapturePin/formatGeneration`` when the frame was dequeued: the frame has the
    /// format of that generation (the pin's first format for 0, else ``FormatChange/format`` of
    /// the change with that ``FormatChange/generation``).
    public var formatGeneration: UInt64

    /// A compressed frame that failed validation, delivered by ``CorruptFramePolicy/deliver``.
    public var isCorrupt: Bool { !defects.isEmpty }
    /// The driver flagged the frame as damaged (V4L2_BUF_FLAG_ERROR).
    public var hasError: Bool { flags.contains(.error) }
    /// The timestamp is from CLOCK_MONOTONIC.
    public var isMonotonic: Bool { flags.intersection(.timestampMask) == .timestampMonotonic }
    /// The sum of the planes' payload sizes.
    public var payloadSize: Int {
        var total = 0
        for i in 0..<planeCount { total += planes[i].payloadSize }
        return total
    }

    static let empty = FrameInfo(BufferDescriptor(index: 0, bufferType: .videoCapture, memory: .mmap, planeCount: 0), droppedBefore: 0)

    init(_ descriptor: BufferDescriptor, droppedBefore: UInt32) {
        index = 0
        sequence = 0
        timestampNanoseconds = 0
        field = 0
        flags = []
        self.droppedBefore = 0
        planeCount = 0
        planes = InlineArray(repeating: FramePlaneInfo(bytesUsed: 0, dataOffset: 0, length: 0))
        defects = []
        formatGeneration = 0
        var descriptor = descriptor
        assign(&descriptor, droppedBefore: droppedBefore)
    }

    /// Overwrites this value with `descriptor`'s metadata in place. (`descriptor` is inout only
    /// to be passed by address, with no copy; it is not changed.)
    mutating func assign(_ descriptor: inout BufferDescriptor, droppedBefore: UInt32) {
        for i in min(descriptor.planeCount, planeCount)..<planeCount {
            planes[i] = FramePlaneInfo(bytesUsed: 0, dataOffset: 0, length: 0)
        }
        index = Int(descriptor.index)
        sequence = descriptor.sequence
        timestampNanoseconds = descriptor.timestampNanoseconds
        field = descriptor.field
        flags = descriptor.flags
        self.droppedBefore = droppedBefore
        defects = []
        planeCount = descriptor.planeCount
        for i in 0..<descriptor.planeCount {
            planes[i] = FramePlaneInfo(bytesUsed: descriptor.planes[i].bytesUsed, dataOffset: descriptor.planes[i].dataOffset,
                                       length: descriptor.planes[i].length)
        }
    }
}

/// The bytes of a locked frame, handed to the closure of ``StreamPointer/withPayload(_:)``
/// (or `withLockedPayload`).
///
/// Non-escapable: the payload and the `RawSpan`s it gives out cannot leave the closure, so
/// the compiler rejects code that would read a buffer after it was unlocked, requeued or
/// unmapped. The `unsafe...` methods hand out raw pointers for C calls (writev with
/// O_DIRECT, libpng); those are valid only until the closure returns, and nothing checks it.
public struct FramePayload: ~Escapable {
    let record: UnsafePointer<FrameInfo>
    let memory: UnsafePointer<FrameMemory>

    @_lifetime(immortal)
    init(record: UnsafePointer<FrameInfo>, memory: UnsafePointer<FrameMemory>) {
        self.record = record
        self.memory = memory
    }

    /// The frame's metadata (read in place from the frame's record).
    public var info: FrameInfo { unsafeAddress { record } }

    /// The number of planes.
    public var planeCount: Int { info.planeCount }

    /// The payload of plane `index`: from `dataOffset` to `bytesUsed`.
    @_lifetime(copy self)
    public func plane(_ index: Int) -> RawSpan {
        let bytes = unsafePlaneBytes(index)
        return _overrideLifetime(RawSpan(_unsafeBytes: bytes), copying: self)
    }

    /// A compressed frame's bytes as the driver delivered them: plane 0 from data_offset to
    /// bytesused (for MJPEG, one whole JPEG picture unless ``FrameInfo/isCorrupt``).
    public var compressedBytes: RawSpan {
        @_lifetime(copy self) get { plane(0) }
    }

    /// The whole memory of plane `index` (`length` bytes).
    @_lifetime(copy self)
    public func planeMemory(_ index: Int) -> RawSpan {
        let bytes = unsafePlaneMemory(index)
        return _overrideLifetime(RawSpan(_unsafeBytes: bytes), copying: self)
    }

    /// Plane `index`'s payload as a raw pointer, for C calls. Valid only until the closure
    /// that received this payload returns; the caller must not keep it.
    public func unsafePlaneBytes(_ index: Int) -> UnsafeRawBufferPointer {
        Self.payloadBytes(record: record, memory: memory, plane: index)
    }

    /// ``compressedBytes`` as a raw pointer, for C calls (a JPEG decoder). Valid only until
    /// the closure that received this payload returns.
    public var unsafeCompressedBytes: UnsafeRawBufferPointer { Self.payloadBytes(record: record, memory: memory, plane: 0) }

    /// The whole memory of plane `index` as a raw pointer. Valid only until the closure that
    /// received this payload returns.
    public func unsafePlaneMemory(_ index: Int) -> UnsafeRawBufferPointer {
        Self.memoryBytes(record: record, memory: memory, plane: index)
    }

    // Static, on the escapable pointers alone: Swift 6.3.1's optimizer (CopyPropagation)
    // crashes on these bodies as methods of the ~Escapable payload in release builds.
    static func payloadBytes(record: UnsafePointer<FrameInfo>, memory: UnsafePointer<FrameMemory>, plane index: Int) -> UnsafeRawBufferPointer {
        let planeCount = record.pointee.planeCount
        precondition(index >= 0 && index < planeCount, "plane \(index) out of range 0..<\(planeCount)")
        let plane = record.pointee.planes[index]
        guard let base = memory.pointee.planes[index].address else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + plane.dataOffset, count: plane.payloadSize)
    }

    static func memoryBytes(record: UnsafePointer<FrameInfo>, memory: UnsafePointer<FrameMemory>, plane index: Int) -> UnsafeRawBufferPointer {
        let planeCount = record.pointee.planeCount
        precondition(index >= 0 && index < planeCount, "plane \(index) out of range 0..<\(planeCount)")
        return UnsafeRawBufferPointer(start: memory.pointee.planes[index].address, count: memory.pointee.planes[index].length)
    }
}

/// What `withLockedPayload` throws: the lock failed (the frame was cancelled or released, or
/// CPU access to a dmabuf could not begin), or the closure threw.
public enum LockedPayloadError<Failure: Error>: Error, CustomStringConvertible {
    case lock(CaptureError)
    case body(Failure)

    public var description: String {
        switch self {
        case .lock(let error): return error.description
        case .body(let error): return "\(error)"
        }
    }

    /// The lock's error, or the closure's when that is a ``CaptureError``.
    public var captureError: CaptureError? {
        switch self {
        case .lock(let error): return error
        case .body(let error): return error as? CaptureError
        }
    }
}

/// Counters of a stream, for honest reporting of every frame.
public struct CaptureStatistics: Hashable, Sendable, Codable {
    /// Frames handed to the consumer (the leading edge advanced onto them).
    public var delivered = 0
    /// Frames the driver skipped, counted from gaps in sequence numbers.
    public var dropped = 0
    /// Frames with V4L2_BUF_FLAG_ERROR (delivered or skipped, by policy).
    public var errorFlagged = 0
    /// Error-flagged frames requeued without delivery (``ErrorFramePolicy/skip``).
    public var skippedErrorFrames = 0
    /// Impossible answers from the driver (index out of range or not queued, bytesused > length,
    /// data_offset >= bytesused); such buffers are never delivered.
    public var driverViolations = 0
    /// QBUF failures while returning a frame to the driver (the buffer is retried later).
    public var requeueFailures = 0
    /// Times the consumer held every buffer and the pin had to wait (``StarvationPolicy/block``).
    public var starvationWaits = 0
    /// Held frames cancelled to keep the driver fed (``StarvationPolicy/cancelOldestUnlocked``).
    public var starvationCancels = 0
    /// Frames cancelled by STREAMOFF, a fatal error or a disconnect while held.
    public var cancelledFrames = 0
    /// The first sequence number seen and the last, for span checks.
    public var firstSequence: UInt32?
    public var lastSequence: UInt32?
    /// A description of the last driver violation.
    public var lastViolation: String?
    /// Compressed frames with bytesused 0 (``CompressedFrameDefects/empty``).
    public var compressedEmpty = 0
    /// Compressed (JPEG) frames without an SOI marker at the start.
    public var compressedMissingStartOfImage = 0
    /// Compressed (JPEG) frames without an EOI marker at the end (truncated).
    public var compressedTruncated = 0
    /// Compressed frames whose bytesused is larger than the buffer.
    public var compressedBytesUsedOverLength = 0
    /// Corrupt compressed frames given back to the driver undelivered (``CorruptFramePolicy/skip``).
    public var corruptSkipped = 0
    /// Corrupt compressed frames delivered, flagged (``CorruptFramePolicy/deliver``).
    public var corruptDelivered = 0
    /// A description of the last corrupt compressed frame.
    public var lastCorruption: String?
    /// Failed ends of CPU access (DMA_BUF_IOCTL_SYNC end) after a frame was read; a failed start
    /// fails the lock instead.
    public var synchronizationFailures = 0
    /// Source changes the pin followed (restarted with the new format); see ``FormatChange``.
    public var sourceChanges = 0
    /// Frames the driver had filled when a source change was seen, dropped (never delivered:
    /// their format may be the new one) before STREAMOFF.
    public var droppedAtSourceChange = 0

    public init() {}

    /// These counters and `later`'s together, as over two streams one after the other (a pin
    /// before a reconnect and the one after): counts add up, the sequence span is the first's
    /// start to the later's end, the last descriptions are the later's when it has them.
    public func adding(_ later: CaptureStatistics) -> CaptureStatistics {
        var sum = self
        sum.delivered += later.delivered
        sum.dropped += later.dropped
        sum.errorFlagged += later.errorFlagged
        sum.skippedErrorFrames += later.skippedErrorFrames
        sum.driverViolations += later.driverViolations
        sum.requeueFailures += later.requeueFailures
        sum.starvationWaits += later.starvationWaits
        sum.starvationCancels += later.starvationCancels
        sum.cancelledFrames += later.cancelledFrames
        sum.firstSequence = firstSequence ?? later.firstSequence
        sum.lastSequence = later.lastSequence ?? lastSequence
        sum.lastViolation = later.lastViolation ?? lastViolation
        sum.compressedEmpty += later.compressedEmpty
        sum.compressedMissingStartOfImage += later.compressedMissingStartOfImage
        sum.compressedTruncated += later.compressedTruncated
        sum.compressedBytesUsedOverLength += later.compressedBytesUsedOverLength
        sum.corruptSkipped += later.corruptSkipped
        sum.corruptDelivered += later.corruptDelivered
        sum.lastCorruption = later.lastCorruption ?? lastCorruption
        sum.synchronizationFailures += later.synchronizationFailures
        sum.sourceChanges += later.sourceChanges
        sum.droppedAtSourceChange += later.droppedAtSourceChange
        return sum
    }
}
