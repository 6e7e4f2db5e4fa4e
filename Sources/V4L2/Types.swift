import CV4L2

/// The type of a V4L2 buffer queue (`enum v4l2_buf_type`).
public enum BufferType: UInt32, Sendable, Hashable, Codable, CustomStringConvertible {
    case videoCapture = 1            // V4L2_BUF_TYPE_VIDEO_CAPTURE
    case videoOutput = 2             // V4L2_BUF_TYPE_VIDEO_OUTPUT
    case videoCaptureMultiplanar = 9 // V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
    case videoOutputMultiplanar = 10 // V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE

    @inlinable @inline(__always)
    public var isMultiplanar: Bool { self == .videoCaptureMultiplanar || self == .videoOutputMultiplanar }

    public var description: String {
        switch self {
        case .videoCapture: return "video-capture"
        case .videoOutput: return "video-output"
        case .videoCaptureMultiplanar: return "video-capture-mplane"
        case .videoOutputMultiplanar: return "video-output-mplane"
        }
    }
}

/// How buffer memory is provided (`enum v4l2_memory`).
///
/// - `mmap`: the driver allocates; user space maps it (QUERYBUF + mmap).
/// - `userPointer`: user space allocates ordinary memory and hands its address to QBUF.
/// - `dmabuf`: user space hands QBUF a dmabuf file descriptor from an exporter.
public enum MemoryKind: UInt32, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    case mmap = 1
    case userPointer = 2
    case dmabuf = 4

    /// The name used on the command line and in JSON: `mmap`, `userptr`, `dmabuf`.
    public var description: String {
        switch self {
        case .mmap: return "mmap"
        case .userPointer: return "userptr"
        case .dmabuf: return "dmabuf"
        }
    }

    public init?(name: String) {
        switch name.lowercased() {
        case "mmap": self = .mmap
        case "userptr", "user-pointer", "userpointer": self = .userPointer
        case "dmabuf": self = .dmabuf
        default: return nil
        }
    }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let kind = MemoryKind(name: name) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown memory kind \(name)"))
        }
        self = kind
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// A four-character code naming a pixel format, for example `YUYV`.
public struct FourCC: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `V4L2_PIX_FMT_FLAG_BE`-style bit 31: the big-endian variant of a format (`v4l2_fourcc_be`).
    public static let bigEndianFlag: UInt32 = 1 << 31

    /// From the spellings v4l2-ctl prints and takes: up to four ASCII characters (shorter ones
    /// are padded with spaces), the same followed by `-BE` for a big-endian variant (`Y16 -BE`,
    /// also `Y16-BE`), or the code in hexadecimal (`0x20363159`, more than four characters).
    public init?(_ string: String) {
        if string.count > 4, string.hasPrefix("0x") || string.hasPrefix("0X") {
            guard let value = UInt32(string.dropFirst(2), radix: 16) else { return nil }
            rawValue = value
            return
        }
        var text = Substring(string)
        var flag: UInt32 = 0
        if text.count > 4, text.hasSuffix("-BE") {
            text = text.dropLast(3)
            flag = FourCC.bigEndianFlag
        }
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 4, bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else { return nil }
        var value: UInt32 = 0
        for i in 0..<4 {
            let byte = i < bytes.count ? UInt32(bytes[i]) : 0x20
            value |= byte << (8 * UInt32(i))
        }
        rawValue = value | flag
    }

    /// v4l2-ctl's spelling (`fcc2s`): the four characters, trailing spaces trimmed, and
    /// `-BE` after all four for a big-endian variant (`Y16 -BE`); a code with a byte that is
    /// not printable ASCII as `0x` and eight hexadecimal digits. Either form reads back with
    /// ``init(_:)``.
    public var description: String {
        let code = rawValue & ~FourCC.bigEndianFlag
        var text = ""
        for i in 0..<4 {
            let byte = UInt8((code >> (8 * UInt32(i))) & 0xff)
            guard byte >= 0x20 && byte < 0x7f else {
                let hex = String(rawValue, radix: 16)
                return "0x" + String(repeating: "0", count: 8 - hex.count) + hex
            }
            text.append(Character(Unicode.Scalar(byte)))
        }
        if rawValue & FourCC.bigEndianFlag != 0 { return text + "-BE" }
        while text.hasSuffix(" ") { text.removeLast() }
        return text
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = FourCC(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad fourcc \(text)"))
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public static let yuyv = FourCC("YUYV")!
    public static let uyvy = FourCC("UYVY")!
    public static let nv12 = FourCC("NV12")!
    public static let nv12m = FourCC("NM12")!
    public static let yuv420 = FourCC("YU12")!
    public static let yuv420m = FourCC("YM12")!
    public static let yuv422p = FourCC("422P")!
    public static let grey = FourCC("GREY")!
    public static let rgb24 = FourCC("RGB3")!
    public static let mjpeg = FourCC("MJPG")!
    public static let jpeg = FourCC("JPEG")!

    /// The JPEG family: frames are whole JPEG pictures (SOI ... EOI) of varying size.
    public var isJPEG: Bool { self == .mjpeg || self == .jpeg }

    /// Compressed formats known by fourcc, for drivers that do not set V4L2_FMT_FLAG_COMPRESSED.
    public static let knownCompressed: [FourCC] = ["MJPG", "JPEG", "H264", "HEVC", "VP80", "VP90", "MPG1", "MPG2", "MPG4"]
        .compactMap { FourCC($0) }

    /// Whether frames of this format are compressed (by fourcc; see ``FormatDescription/isCompressed``).
    public var isKnownCompressed: Bool { FourCC.knownCompressed.contains(self) }
}

/// A rational number, for frame intervals (seconds per frame).
public struct Fraction: Hashable, Sendable, Codable, CustomStringConvertible {
    public var numerator: UInt32
    public var denominator: UInt32
    public init(_ numerator: UInt32, _ denominator: UInt32) {
        self.numerator = numerator
        self.denominator = denominator
    }
    public var value: Double { denominator == 0 ? 0 : Double(numerator) / Double(denominator) }
    public var description: String { "\(numerator)/\(denominator)" }
}

/// Device capability bits (`V4L2_CAP_*`).
public struct CapabilityFlags: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    // Constants as inlinable computed properties: a `static let` is reached through a lazy
    // global's accessor (swift_once) on every use from another module, per frame here.
    public static let videoCapture = CapabilityFlags(rawValue: 0x0000_0001)
    public static let videoOutput = CapabilityFlags(rawValue: 0x0000_0002)
    public static let videoOverlay = CapabilityFlags(rawValue: 0x0000_0004)
    public static let vbiCapture = CapabilityFlags(rawValue: 0x0000_0010)
    public static let slicedVBICapture = CapabilityFlags(rawValue: 0x0000_0040)
    public static let videoCaptureMultiplanar = CapabilityFlags(rawValue: 0x0000_1000)
    public static let videoOutputMultiplanar = CapabilityFlags(rawValue: 0x0000_2000)
    public static let videoM2MMultiplanar = CapabilityFlags(rawValue: 0x0000_4000)
    public static let videoM2M = CapabilityFlags(rawValue: 0x0000_8000)
    public static let tuner = CapabilityFlags(rawValue: 0x0001_0000)
    public static let audio = CapabilityFlags(rawValue: 0x0002_0000)
    public static let radio = CapabilityFlags(rawValue: 0x0004_0000)
    public static let sdrCapture = CapabilityFlags(rawValue: 0x0010_0000)
    public static let metaCapture = CapabilityFlags(rawValue: 0x0080_0000)
    public static let readWrite = CapabilityFlags(rawValue: 0x0100_0000)
    public static let streaming = CapabilityFlags(rawValue: 0x0400_0000)
    public static let metaOutput = CapabilityFlags(rawValue: 0x0800_0000)
    public static let touch = CapabilityFlags(rawValue: 0x1000_0000)
    public static let ioMC = CapabilityFlags(rawValue: 0x2000_0000)
    public static let deviceCaps = CapabilityFlags(rawValue: 0x8000_0000)

    /// Names of the set bits, as v4l2-ctl prints them.
    public var names: [String] {
        let table: [(CapabilityFlags, String)] = [
            (.videoCapture, "Video Capture"), (.videoCaptureMultiplanar, "Video Capture Multiplanar"),
            (.videoOutput, "Video Output"), (.videoOutputMultiplanar, "Video Output Multiplanar"),
            (.videoOverlay, "Video Overlay"), (.videoM2M, "Video Memory-to-Memory"),
            (.videoM2MMultiplanar, "Video Memory-to-Memory Multiplanar"), (.vbiCapture, "VBI Capture"),
            (.slicedVBICapture, "Sliced VBI Capture"), (.tuner, "Tuner"), (.audio, "Audio"), (.radio, "Radio"),
            (.sdrCapture, "SDR Capture"), (.metaCapture, "Metadata Capture"), (.metaOutput, "Metadata Output"),
            (.touch, "Touch Device"), (.ioMC, "I/O MC"), (.readWrite, "Read/Write"), (.streaming, "Streaming"),
            (.deviceCaps, "Device Capabilities"),
        ]
        return table.filter { contains($0.0) }.map(\.1)
    }
}

/// What VIDIOC_QUERYCAP returns.
public struct DeviceCapabilities: Hashable, Sendable, Codable {
    public var driver: String
    public var card: String
    public var busInfo: String
    /// The kernel version the driver reports, as `major.minor.patch`.
    public var version: String
    /// Capabilities of the physical device as a whole.
    public var capabilities: CapabilityFlags
    /// Capabilities of this node (when `.deviceCaps` is set), else the same as `capabilities`.
    public var deviceCapabilities: CapabilityFlags

    public init(driver: String, card: String, busInfo: String, version: String,
                capabilities: CapabilityFlags, deviceCapabilities: CapabilityFlags) {
        self.driver = driver
        self.card = card
        self.busInfo = busInfo
        self.version = version
        self.capabilities = capabilities
        self.deviceCapabilities = deviceCapabilities
    }

    /// Whether this node can capture video, single- or multi-planar, by streaming I/O.
    public var canCapture: Bool {
        deviceCapabilities.contains(.videoCapture) || deviceCapabilities.contains(.videoCaptureMultiplanar)
    }

    /// The capture queue type of this node: multi-planar when only that is offered.
    public var captureBufferType: BufferType? {
        if deviceCapabilities.contains(.videoCapture) { return .videoCapture }
        if deviceCapabilities.contains(.videoCaptureMultiplanar) { return .videoCaptureMultiplanar }
        return nil
    }
}

/// Capability bits that VIDIOC_REQBUFS and VIDIOC_CREATE_BUFS report (`V4L2_BUF_CAP_*`).
public struct BufferCapabilities: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let supportsMMAP = BufferCapabilities(rawValue: 1 << 0)
    public static let supportsUserPointer = BufferCapabilities(rawValue: 1 << 1)
    public static let supportsDMABuf = BufferCapabilities(rawValue: 1 << 2)
    public static let supportsRequests = BufferCapabilities(rawValue: 1 << 3)
    public static let supportsOrphanedBuffers = BufferCapabilities(rawValue: 1 << 4)
    public static let supportsM2MHoldCaptureBuffer = BufferCapabilities(rawValue: 1 << 5)
    public static let supportsMMAPCacheHints = BufferCapabilities(rawValue: 1 << 6)

    /// The memory kinds these bits allow.
    public var memoryKinds: [MemoryKind] {
        var kinds: [MemoryKind] = []
        if contains(.supportsMMAP) { kinds.append(.mmap) }
        if contains(.supportsUserPointer) { kinds.append(.userPointer) }
        if contains(.supportsDMABuf) { kinds.append(.dmabuf) }
        return kinds
    }
}

/// Buffer flags (`V4L2_BUF_FLAG_*`). The constants are inlinable computed properties: a
/// `static let` would be reached through a lazy global's accessor on every use from another
/// module, which the per-frame paths pay.
public struct BufferFlags: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public static var mapped: BufferFlags { BufferFlags(rawValue: 0x0000_0001) }
    @inlinable public static var queued: BufferFlags { BufferFlags(rawValue: 0x0000_0002) }
    @inlinable public static var done: BufferFlags { BufferFlags(rawValue: 0x0000_0004) }
    @inlinable public static var keyframe: BufferFlags { BufferFlags(rawValue: 0x0000_0008) }
    @inlinable public static var pframe: BufferFlags { BufferFlags(rawValue: 0x0000_0010) }
    @inlinable public static var bframe: BufferFlags { BufferFlags(rawValue: 0x0000_0020) }
    @inlinable public static var error: BufferFlags { BufferFlags(rawValue: 0x0000_0040) }
    @inlinable public static var inRequest: BufferFlags { BufferFlags(rawValue: 0x0000_0080) }
    @inlinable public static var timecode: BufferFlags { BufferFlags(rawValue: 0x0000_0100) }
    @inlinable public static var prepared: BufferFlags { BufferFlags(rawValue: 0x0000_0400) }
    @inlinable public static var noCacheInvalidate: BufferFlags { BufferFlags(rawValue: 0x0000_0800) }
    @inlinable public static var noCacheClean: BufferFlags { BufferFlags(rawValue: 0x0000_1000) }
    @inlinable public static var timestampMonotonic: BufferFlags { BufferFlags(rawValue: 0x0000_2000) }
    @inlinable public static var timestampCopy: BufferFlags { BufferFlags(rawValue: 0x0000_4000) }
    @inlinable public static var last: BufferFlags { BufferFlags(rawValue: 0x0010_0000) }
    @inlinable public static var timestampMask: BufferFlags { BufferFlags(rawValue: 0x0000_e000) }
}

/// A video input (VIDIOC_ENUMINPUT).
public struct VideoInput: Hashable, Sendable, Codable {
    public var index: UInt32
    public var name: String
    /// 1 tuner, 2 camera, 3 touch.
    public var type: UInt32
    public var status: UInt32
    public var capabilities: UInt32
    public var typeName: String {
        switch type {
        case 1: return "tuner"
        case 2: return "camera"
        case 3: return "touch"
        default: return "type \(type)"
        }
    }
}

/// A pixel format the device offers (VIDIOC_ENUM_FMT).
public struct FormatDescription: Hashable, Sendable, Codable {
    public var index: UInt32
    public var bufferType: BufferType
    public var flags: UInt32
    public var description: String
    public var pixelFormat: FourCC

    /// V4L2_FMT_FLAG_COMPRESSED.
    public static let flagCompressed: UInt32 = 0x0001

    /// The driver flags the format as compressed, or its fourcc is a known compressed one.
    public var isCompressed: Bool { flags & FormatDescription.flagCompressed != 0 || pixelFormat.isKnownCompressed }
}

/// A frame size (VIDIOC_ENUM_FRAMESIZES).
public enum FrameSize: Hashable, Sendable, Codable, CustomStringConvertible {
    case discrete(width: UInt32, height: UInt32)
    case stepwise(minWidth: UInt32, maxWidth: UInt32, stepWidth: UInt32,
                  minHeight: UInt32, maxHeight: UInt32, stepHeight: UInt32)
    case continuous(minWidth: UInt32, maxWidth: UInt32, minHeight: UInt32, maxHeight: UInt32)

    public var description: String {
        switch self {
        case let .discrete(width, height): return "\(width)x\(height)"
        case let .stepwise(minW, maxW, stepW, minH, maxH, stepH):
            return "\(minW)x\(minH) - \(maxW)x\(maxH) step \(stepW)x\(stepH)"
        case let .continuous(minW, maxW, minH, maxH): return "\(minW)x\(minH) - \(maxW)x\(maxH)"
        }
    }
}

/// A frame interval (VIDIOC_ENUM_FRAMEINTERVALS), in seconds per frame.
public enum FrameInterval: Hashable, Sendable, Codable, CustomStringConvertible {
    case discrete(Fraction)
    case stepwise(min: Fraction, max: Fraction, step: Fraction)
    case continuous(min: Fraction, max: Fraction)

    public var description: String {
        switch self {
        case let .discrete(interval):
            return "\(interval) s (\(FrameInterval.fps(interval)) fps)"
        case let .stepwise(min, max, step): return "\(min) - \(max) s step \(step)"
        case let .continuous(min, max): return "\(min) - \(max) s"
        }
    }

    static func fps(_ interval: Fraction) -> String {
        guard interval.numerator != 0 else { return "?" }
        let value = Double(interval.denominator) / Double(interval.numerator)
        return value == value.rounded() ? String(Int(value)) : String(format3(value))
    }

    static func format3(_ value: Double) -> String {
        let scaled = (value * 1000).rounded() / 1000
        return "\(scaled)"
    }
}

/// One plane of an image format: bytes per line and the size of a frame's plane.
public struct PlaneFormat: Hashable, Sendable, Codable {
    public var bytesPerLine: UInt32
    public var sizeImage: UInt32
    public init(bytesPerLine: UInt32, sizeImage: UInt32) {
        self.bytesPerLine = bytesPerLine
        self.sizeImage = sizeImage
    }
}

/// An image format (`struct v4l2_pix_format` or `v4l2_pix_format_mplane`) as one type.
/// A single-planar format has exactly one plane.
public struct ImageFormat: Hashable, Sendable, Codable {
    public var bufferType: BufferType
    public var width: UInt32
    public var height: UInt32
    public var pixelFormat: FourCC
    /// `enum v4l2_field`; 1 is progressive (NONE).
    public var field: UInt32
    public var colorspace: UInt32
    public var planes: [PlaneFormat]
    /// `ycbcr_enc` (`enum v4l2_ycbcr_encoding`), or for HSV formats `hsv_enc` (128: hue
    /// 0...179, 129: hue 0...255); 0 is the colorspace's default.
    public var ycbcrEncoding: UInt32
    /// `enum v4l2_quantization`: 0 default, 1 full range, 2 limited range.
    public var quantization: UInt32

    public init(bufferType: BufferType, width: UInt32, height: UInt32, pixelFormat: FourCC,
                field: UInt32 = 1, colorspace: UInt32 = 0, planes: [PlaneFormat] = [],
                ycbcrEncoding: UInt32 = 0, quantization: UInt32 = 0) {
        self.bufferType = bufferType
        self.width = width
        self.height = height
        self.pixelFormat = pixelFormat
        self.field = field
        self.colorspace = colorspace
        self.planes = planes
        self.ycbcrEncoding = ycbcrEncoding
        self.quantization = quantization
    }

    /// The sum of the planes' sizes.
    public var totalSize: Int { planes.reduce(0) { $0 + Int($1.sizeImage) } }
}

/// What VIDIOC_REQBUFS granted.
public struct RequestedBuffers: Hashable, Sendable {
    public var count: UInt32
    public var capabilities: BufferCapabilities
}

/// What VIDIOC_CREATE_BUFS created: `count` buffers starting at `index`.
public struct CreatedBuffers: Hashable, Sendable {
    public var index: UInt32
    public var count: UInt32
    public var capabilities: BufferCapabilities
}

/// The largest number of planes a V4L2 buffer has (VIDEO_MAX_PLANES).
public let maximumPlaneCount = 8

/// One plane of a buffer as QUERYBUF, QBUF and DQBUF see it.
public struct BufferPlane: Hashable, Sendable {
    /// Size of the plane's memory.
    public var length: UInt32 = 0
    /// Bytes of payload, including `dataOffset`.
    public var bytesUsed: UInt32 = 0
    /// Where the payload starts in the plane.
    public var dataOffset: UInt32 = 0
    /// MMAP: the offset to pass to mmap.
    public var mapOffset: UInt32 = 0
    /// USERPTR: the address of the user memory.
    public var userPointer: UInt = 0
    /// DMABUF: the dmabuf file descriptor.
    public var fd: Int32 = -1

    @inlinable
    public init(length: UInt32 = 0, bytesUsed: UInt32 = 0, dataOffset: UInt32 = 0, mapOffset: UInt32 = 0,
                userPointer: UInt = 0, fd: Int32 = -1) {
        self.length = length
        self.bytesUsed = bytesUsed
        self.dataOffset = dataOffset
        self.mapOffset = mapOffset
        self.userPointer = userPointer
        self.fd = fd
    }
}

/// A buffer's description: what QUERYBUF returns, what QBUF is given and what DQBUF
/// returns. The planes are stored inline, so passing one around never allocates.
public struct BufferDescriptor: Sendable {
    public var index: UInt32
    public var bufferType: BufferType
    public var memory: MemoryKind
    public var flags = BufferFlags(rawValue: 0)
    /// `enum v4l2_field`.
    public var field: UInt32 = 0
    public var sequence: UInt32 = 0
    /// The capture time (CLOCK_MONOTONIC when `flags` has `.timestampMonotonic`), in nanoseconds.
    public var timestampNanoseconds: Int64 = 0
    public var planeCount: Int
    public var planes: InlineArray<8, BufferPlane>

    @inlinable
    public init(index: UInt32, bufferType: BufferType, memory: MemoryKind, planeCount: Int = 1) {
        self.index = index
        self.bufferType = bufferType
        self.memory = memory
        self.planeCount = planeCount
        self.planes = InlineArray(repeating: BufferPlane())
    }
}

/// Poll event bits.
public struct PollEvents: OptionSet, Hashable, Sendable {
    public var rawValue: Int16
    @inlinable public init(rawValue: Int16) { self.rawValue = rawValue }
    // Constants as inlinable computed properties: a `static let` is reached through a lazy
    // global's accessor (swift_once) on every use from another module, per frame here.
    @inlinable public static var input: PollEvents { PollEvents(rawValue: 0x001) }
    @inlinable public static var priority: PollEvents { PollEvents(rawValue: 0x002) }
    @inlinable public static var output: PollEvents { PollEvents(rawValue: 0x004) }
    @inlinable public static var error: PollEvents { PollEvents(rawValue: 0x008) }
    @inlinable public static var hangUp: PollEvents { PollEvents(rawValue: 0x010) }
    @inlinable public static var invalid: PollEvents { PollEvents(rawValue: 0x020) }
    @inlinable public static var readNormal: PollEvents { PollEvents(rawValue: 0x040) }
}
