import V4L2

/// Flags of a framing item (the `KSALLOCATOR_REQUIREMENTF_*` / `KSALLOCATOR_FLAG_*` analog).
public struct FramingFlags: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The device can capture into user memory or imported dmabufs, not only its own pool.
    public static let acceptsExternalMemory = FramingFlags(rawValue: 1 << 0)
    /// Buffers may be added while allocated (VIDIOC_CREATE_BUFS works).
    public static let canGrow = FramingFlags(rawValue: 1 << 1)
    /// The driver honours MMAP cache hints.
    public static let cacheHints = FramingFlags(rawValue: 1 << 2)
    /// Buffers may stay mapped after REQBUFS(0) (orphaned buffers).
    public static let orphanedBuffers = FramingFlags(rawValue: 1 << 3)
    /// The payload of this plane may start after `dataOffset` bytes.
    public static let dataOffset = FramingFlags(rawValue: 1 << 4)
    /// The plane carries a compressed frame (MJPEG, JPEG, ...): its payload size varies per frame,
    /// from 0 up to `frameSizeMaximum` (sizeimage).
    public static let compressed = FramingFlags(rawValue: 1 << 5)

    static let all: [FramingFlags] = [.acceptsExternalMemory, .canGrow, .cacheHints, .orphanedBuffers, .dataOffset, .compressed]

    public var names: [String] {
        var names: [String] = []
        if contains(.acceptsExternalMemory) { names.append("accepts-external-memory") }
        if contains(.canGrow) { names.append("can-grow") }
        if contains(.cacheHints) { names.append("cache-hints") }
        if contains(.orphanedBuffers) { names.append("orphaned-buffers") }
        if contains(.dataOffset) { names.append("data-offset") }
        if contains(.compressed) { names.append("compressed") }
        return names
    }
}

/// The requirements for one plane of a frame (the `KS_FRAMING_ITEM` analog).
public struct FramingItem: Hashable, Sendable, Codable {
    /// The plane this item describes.
    public var plane: Int
    /// Memory kinds the device accepts for frames (the item's MemoryType), from REQBUFS's capability bits.
    public var memoryKinds: [MemoryKind]
    /// The fewest frames the driver needs queued to stream (Frames, lower bound).
    public var framesMinimum: Int
    /// The most frames the queue can hold (Frames, upper bound).
    public var framesMaximum: Int
    /// The smallest payload a frame has (FramingRange minimum): the driver's `sizeimage` for an
    /// uncompressed format, 0 for a compressed one (its bytesused varies per frame).
    public var frameSizeMinimum: Int
    /// The largest payload the driver will write (FramingRange maximum): `sizeimage`.
    public var frameSizeMaximum: Int
    /// The memory a plane must have: room for the largest payload, whatever the frame size range.
    public var bufferSize: Int { max(frameSizeMinimum, frameSizeMaximum) }
    /// Bytes per line of this plane.
    public var bytesPerLine: Int
    /// Required alignment of user memory, in bytes (FileAlignment + 1).
    public var alignment: Int
    public var flags: FramingFlags

    public init(plane: Int, memoryKinds: [MemoryKind], framesMinimum: Int, framesMaximum: Int,
                frameSizeMinimum: Int, frameSizeMaximum: Int, bytesPerLine: Int, alignment: Int, flags: FramingFlags) {
        self.plane = plane
        self.memoryKinds = memoryKinds
        self.framesMinimum = framesMinimum
        self.framesMaximum = framesMaximum
        self.frameSizeMinimum = frameSizeMinimum
        self.frameSizeMaximum = frameSizeMaximum
        self.bytesPerLine = bytesPerLine
        self.alignment = alignment
        self.flags = flags
    }

    private enum CodingKeys: String, CodingKey {
        case plane, memoryKinds, framesMinimum, framesMaximum, frameSizeMinimum, frameSizeMaximum
        case bytesPerLine, alignment, flags
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(plane, forKey: .plane)
        try container.encode(memoryKinds, forKey: .memoryKinds)
        try container.encode(framesMinimum, forKey: .framesMinimum)
        try container.encode(framesMaximum, forKey: .framesMaximum)
        try container.encode(frameSizeMinimum, forKey: .frameSizeMinimum)
        try container.encode(frameSizeMaximum, forKey: .frameSizeMaximum)
        try container.encode(bytesPerLine, forKey: .bytesPerLine)
        try container.encode(alignment, forKey: .alignment)
        try container.encode(flags.names, forKey: .flags)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        plane = try container.decode(Int.self, forKey: .plane)
        memoryKinds = try container.decode([MemoryKind].self, forKey: .memoryKinds)
        framesMinimum = try container.decode(Int.self, forKey: .framesMinimum)
        framesMaximum = try container.decode(Int.self, forKey: .framesMaximum)
        frameSizeMinimum = try container.decode(Int.self, forKey: .frameSizeMinimum)
        frameSizeMaximum = try container.decode(Int.self, forKey: .frameSizeMaximum)
        bytesPerLine = try container.decode(Int.self, forKey: .bytesPerLine)
        alignment = try container.decode(Int.self, forKey: .alignment)
        let names = try container.decode([String].self, forKey: .flags)
        var flags: FramingFlags = []
        for flag in FramingFlags.all
        where names.contains(flag.names[0]) {
            flags.insert(flag)
        }
        self.flags = flags
    }
}

/// The framing requirements of a capture pin (the `KSALLOCATOR_FRAMING_EX` analog):
/// one ``FramingItem`` per plane, plus the format they were derived from.
///
/// Read it with ``CapturePin/framing``; it is what allocator selection checks
/// every candidate against.
public struct AllocatorFraming: Hashable, Sendable, Codable {
    /// The device the pin belongs to.
    public var device: String
    public var bufferType: BufferType
    public var pixelFormat: FourCC
    public var width: UInt32
    public var height: UInt32
    /// Output compression (the KS_COMPRESSION ratio of payload to raw size): 1/1 for uncompressed
    /// formats; for a compressed one, the largest payload (sizeimage) over the size of the picture
    /// at 16 bits per pixel, reduced: an upper bound, each frame's bytesused varies below it.
    public var outputCompression: Fraction
    /// The format is compressed (V4L2_FMT_FLAG_COMPRESSED, or a known compressed fourcc such as
    /// MJPG): frame sizes range from 0 to sizeimage and compressed frames are validated.
    public var isCompressed: Bool
    /// CountItems is `items.count`.
    public var items: [FramingItem]

    public init(device: String, bufferType: BufferType, pixelFormat: FourCC, width: UInt32, height: UInt32,
                outputCompression: Fraction = Fraction(1, 1), isCompressed: Bool = false, items: [FramingItem]) {
        self.device = device
        self.bufferType = bufferType
        self.pixelFormat = pixelFormat
        self.width = width
        self.height = height
        self.outputCompression = outputCompression
        self.isCompressed = isCompressed
        self.items = items
    }

    public var countItems: Int { items.count }
    /// Memory kinds every plane accepts.
    public var memoryKinds: [MemoryKind] {
        MemoryKind.allCases.filter { kind in items.allSatisfy { $0.memoryKinds.contains(kind) } }
    }
    public var framesMinimum: Int { items.map(\.framesMinimum).max() ?? 1 }
    public var framesMaximum: Int { items.map(\.framesMaximum).min() ?? 32 }
    /// The memory each plane needs (``FramingItem/bufferSize``), in plane order.
    public var planeSizes: [Int] { items.map(\.bufferSize) }

    /// The output compression of a compressed format: sizeimage over width x height x 2, reduced.
    static func compressionBound(sizeImage: Int, width: UInt32, height: UInt32) -> Fraction {
        let raw = UInt64(width) * UInt64(height) * 2
        guard raw > 0, sizeImage > 0 else { return Fraction(1, 1) }
        var (a, b) = (UInt64(sizeImage), raw)
        while b != 0 { (a, b) = (b, a % b) }
        let numerator = UInt64(sizeImage) / a, denominator = raw / a
        guard numerator <= UInt64(UInt32.max), denominator <= UInt64(UInt32.max) else { return Fraction(1, 1) }
        return Fraction(UInt32(numerator), UInt32(denominator))
    }
}

/// The page size, the alignment user memory needs for USERPTR.
public let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))

#if canImport(Glibc)
import Glibc
#endif

extension AllocatorFraming {
    /// The largest number of buffers a vb2 queue holds (VB2_MAX_FRAME in Linux 6.1).
    public static let queueMaximumFrames = 32

    /// Reads the framing of the capture queue `bufferType` of `device` for `format` (G_FMT's
    /// when nil), without taking or touching the queue: VIDIOC_CREATE_BUFS with count 0 reports
    /// the memory-kind capability bits and allocates nothing, and videobuf2 answers it even while
    /// another file handle owns and streams the queue (REQBUFS(0) would get EBUSY there, or free
    /// buffers of our own). V4L2_CID_MIN_BUFFERS_FOR_CAPTURE gives the minimum when the driver
    /// has it; otherwise the minimum is 1: a driver raises a smaller REQBUFS count to its own
    /// minimum (videobuf2's min_buffers_needed), and the only way to learn that number is a
    /// REQBUFS(1) that runs the driver's queue_setup. That trial used to be here; it took the
    /// queue, cost a queue_setup at start-up, and consumed a one-shot queue_setup fault (vivid's
    /// inject_vidioc_reqbufs_error) meant for the real request.
    public static func query(device: VideoDevice, bufferType: BufferType, format requested: ImageFormat? = nil,
                             knownMinimum: Int? = nil, knownCompression: (pixelFormat: FourCC, compressed: Bool)? = nil)
        throws(V4L2Error) -> AllocatorFraming {
        let format: ImageFormat
        if let requested { format = requested } else { format = try device.format(bufferType) }
        var capabilities: BufferCapabilities = []
        var kinds: [MemoryKind] = []
        // CREATE_BUFS answered for MMAP: the kernel pool can add buffers while allocated.
        var createsBuffers = false
        switch device.bufferCapabilities(format: format, memory: .mmap) {
        case .success(let reported):
            createsBuffers = true
            capabilities = reported
            kinds = reported.memoryKinds
            if kinds.isEmpty {
                // A kernel older than the capability bits: CREATE_BUFS(0) checks each kind.
                for kind in MemoryKind.allCases {
                    if case .success = device.bufferCapabilities(format: format, memory: kind) { kinds.append(kind) }
                }
            }
        case .failure(let error) where error.errno == .inappropriateIOCTLForDevice:
            // No CREATE_BUFS (a driver without vb2's create_bufs): REQBUFS(0) frees nothing of
            // ours here (the pin has no buffers yet) and reports the same bits.
            let probe: RequestedBuffers?
            do throws(V4L2Error) {
                probe = try device.requestBuffers(count: 0, bufferType: bufferType, memory: .mmap)
            } catch {
                guard error.errno == .invalidArgument else { throw error }
                probe = MemoryKind.allCases.lazy.compactMap { try? device.requestBuffers(count: 0, bufferType: bufferType, memory: $0) }.first
                guard probe != nil else { throw error }
            }
            capabilities = probe?.capabilities ?? []
            kinds = capabilities.memoryKinds
            if kinds.isEmpty {
                for kind in MemoryKind.allCases {
                    if (try? device.requestBuffers(count: 0, bufferType: bufferType, memory: kind)) != nil { kinds.append(kind) }
                }
            }
        case .failure(let error):
            // EINVAL without capability bits: an old kernel and a queue without MMAP.
            guard error.errno == .invalidArgument else { throw error }
            for kind in MemoryKind.allCases {
                if case .success = device.bufferCapabilities(format: format, memory: kind) { kinds.append(kind) }
            }
            guard !kinds.isEmpty else { throw error }
        }
        var minimum = 1
        if let knownMinimum {
            minimum = knownMinimum
        } else if let value = try? device.controlValue(ControlID.minimumBuffersForCapture), value > 0 {
            minimum = Int(value)
        }
        var flags: FramingFlags = []
        if kinds.contains(.userPointer) || kinds.contains(.dmabuf) { flags.insert(.acceptsExternalMemory) }
        if capabilities.contains(.supportsMMAPCacheHints) { flags.insert(.cacheHints) }
        if capabilities.contains(.supportsOrphanedBuffers) { flags.insert(.orphanedBuffers) }
        if createsBuffers && kinds.contains(.mmap) && queueMaximumFrames > minimum { flags.insert(.canGrow) }
        // Compressed: the driver's flag from ENUM_FMT, or the fourcc when the driver sets none;
        // the caller's answer for this pixel format when it has one (a pin's start() after init).
        let known = knownCompression.flatMap { $0.pixelFormat == format.pixelFormat ? $0.compressed : nil }
        var compressed = known ?? format.pixelFormat.isKnownCompressed
        if known == nil, !compressed,
           let description = try? device.formatDescription(of: format.pixelFormat, bufferType) {
            compressed = description.isCompressed
        }
        if compressed { flags.insert(.compressed) }
        let items = format.planes.enumerated().map { index, plane in
            FramingItem(plane: index, memoryKinds: kinds, framesMinimum: minimum,
                        framesMaximum: queueMaximumFrames, frameSizeMinimum: compressed ? 0 : Int(plane.sizeImage),
                        frameSizeMaximum: Int(plane.sizeImage), bytesPerLine: Int(plane.bytesPerLine),
                        alignment: pageSize, flags: bufferType.isMultiplanar && index == 0 ? flags.union(.dataOffset) : flags)
        }
        let compression = compressed
            ? compressionBound(sizeImage: format.planes.reduce(0) { $0 + Int($1.sizeImage) }, width: format.width, height: format.height)
            : Fraction(1, 1)
        return AllocatorFraming(device: device.path, bufferType: bufferType, pixelFormat: format.pixelFormat,
                                width: format.width, height: format.height, outputCompression: compression,
                                isCompressed: compressed, items: items)
    }
}
