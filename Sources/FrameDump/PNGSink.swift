import SystemPackage
import CV4L2
import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// Writes PNG pictures of every `every`-th frame (`frame-000000.png`, numbered by frame index)
/// into a directory: the frame is converted to RGB24 with libv4lconvert (multi-planar frames
/// are first copied into one contiguous buffer) and written with libpng.
public final class PNGSink: FrameSink {
    public let directory: String
    public let every: Int
    public let format: ImageFormat
    /// PNG files written so far.
    public private(set) var filesWritten = 0
    private let converter: OpaquePointer
    private let bridge: BackendIoctlBridge?
    private var sourceFormat = v4l2_format()
    private var destinationFormat = v4l2_format()
    private let contiguous: UnsafeMutableRawBufferPointer
    private let rgb: UnsafeMutableRawBufferPointer
    private var errorText = [CChar](repeating: 0, count: 512)

    /// The file name of frame `index`.
    public static func fileName(index: Int) -> String {
        var digits = String(index)
        while digits.count < 6 { digits = "0" + digits }
        return "frame-\(digits).png"
    }

    /// The single-planar format libv4lconvert is given for a (possibly multi-planar) format.
    static func singlePlanarEquivalent(_ pixelFormat: FourCC, planeCount: Int) -> FourCC? {
        if planeCount <= 1 { return pixelFormat }
        switch pixelFormat.description {
        case "NM12": return .nv12
        case "NM21": return FourCC("NV21")
        case "YM12": return .yuv420
        case "YM21": return FourCC("YV12")
        case "NM16": return FourCC("NV16")
        case "NM61": return FourCC("NV61")
        case "YM16": return .yuv422p
        default: return nil
        }
    }

    /// Checks, before anything is captured, that `directory` exists and is writable, or that it
    /// can be created.
    public static func checkDirectory(_ directory: String) throws(FrameDumpError) {
        try OutputDirectory.check(directory, option: "--png-dir")
    }

    /// Checks that libv4lconvert can convert `format` to RGB24 (before streaming).
    public static func checkFormat(_ format: ImageFormat) throws(FrameDumpError) {
        guard singlePlanarEquivalent(format.pixelFormat, planeCount: format.planes.count) != nil else {
            throw .usage("--png-dir: the multi-planar pixel format \(format.pixelFormat) cannot be converted to RGB24")
        }
        try checkCorrectness(format)
    }

    /// How a format's pixels become RGB: the conversion path per format, so other decoders (an
    /// MJPEG one) can sit beside libv4lconvert's.
    enum Conversion: Equatable {
        /// libv4lconvert, which assumes BT.601 limited-range YCbCr and the natural line length.
        case libv4lconvert(bytesPerPixel: Int, horizontalSubsampling: Int, verticalSubsampling: Int, isRGB: Bool)
        /// A compressed format; libv4lconvert decodes it (the MJPEG work may replace this).
        case compressed
    }

    /// The formats whose PNG is known to come out right, with how they are converted; nil for
    /// the rest, which are refused before streaming.
    static func conversion(for pixelFormat: FourCC) -> Conversion? {
        switch pixelFormat.description {
        case "YUYV", "UYVY", "YVYU", "VYUY": return .libv4lconvert(bytesPerPixel: 2, horizontalSubsampling: 2, verticalSubsampling: 1, isRGB: false)
        case "NV12", "NV21", "NM12", "NM21", "YU12", "YV12", "YM12", "YM21":
            return .libv4lconvert(bytesPerPixel: 1, horizontalSubsampling: 2, verticalSubsampling: 2, isRGB: false)
        case "NV16", "NV61", "NM16", "NM61", "422P", "YM16":
            return .libv4lconvert(bytesPerPixel: 1, horizontalSubsampling: 2, verticalSubsampling: 1, isRGB: false)
        case "RGB3", "BGR3": return .libv4lconvert(bytesPerPixel: 3, horizontalSubsampling: 1, verticalSubsampling: 1, isRGB: true)
        case "GREY": return .libv4lconvert(bytesPerPixel: 1, horizontalSubsampling: 1, verticalSubsampling: 1, isRGB: true)
        case "MJPG", "JPEG": return .compressed
        default: return nil
        }
    }

    /// Refuses, before streaming, a format whose PNG would come out wrong (issue 16): a format
    /// libv4lconvert does not convert faithfully (HSV, whose hsv_enc it ignores; 4:4:4, 10-bit,
    /// alpha and Bayer layouts), a width or height the chroma subsampling does not divide (the
    /// driver's lines then differ from what libv4lconvert computes: shifted or sheared
    /// pictures), a line length other than the natural one, and colorimetry other than BT.601
    /// limited-range YCbCr or full-range RGB (vivid's HDMI input is Rec. 709).
    static func checkCorrectness(_ format: ImageFormat) throws(FrameDumpError) {
        let name = "\(format.pixelFormat) \(format.width)x\(format.height)"
        guard let conversion = conversion(for: format.pixelFormat) else {
            throw .usage("--png-dir: \(format.pixelFormat) frames cannot be converted to a correct PNG (framedump converts YUYV, UYVY, YVYU, VYUY, NV12, NV21, NV16, NV61, YU12, YV12, 422P, their multi-planar forms, RGB3, BGR3, GREY and MJPEG); capture raw (-o FILE) instead")
        }
        guard case let .libv4lconvert(bytesPerPixel, horizontal, vertical, isRGB) = conversion else { return }
        if Int(format.width) % horizontal != 0 || Int(format.height) % vertical != 0 {
            throw .usage("--png-dir: \(name): the chroma subsampling of \(format.pixelFormat) needs a width divisible by \(horizontal) and a height divisible by \(vertical) for a correct picture; pick another --size")
        }
        let natural = Int(format.width) * bytesPerPixel
        if let line = format.planes.first?.bytesPerLine, line != 0, Int(line) != natural {
            throw .usage("--png-dir: \(name): the driver's lines are \(line) bytes, not \(natural); libv4lconvert would shear the picture; pick another --size")
        }
        let quantization = format.quantization != 0 ? format.quantization
            : (isRGB || format.colorspace == 7 /* JPEG */ ? 1 : 2)
        if isRGB {
            if quantization != 1 && format.pixelFormat.description != "GREY" {
                throw .usage("--png-dir: \(name) is limited-range RGB (quantization \(format.quantization)); the conversion would show it washed out; set the driver to full range (vivid: rgb_range_cap) or capture raw")
            }
            return
        }
        var encoding = format.ycbcrEncoding
        if encoding == 0 {
            // V4L2_MAP_YCBCR_ENC_DEFAULT.
            switch format.colorspace {
            case 3, 12: encoding = 2          // REC709, DCI_P3: BT.709
            case 10: encoding = 6             // BT2020
            case 2: encoding = 8              // SMPTE240M
            default: encoding = 1             // BT.601
            }
        }
        guard encoding == 1 && quantization == 2 else {
            let encodings: [UInt32: String] = [1: "BT.601", 2: "BT.709", 3: "xvYCC 601", 4: "xvYCC 709", 6: "BT.2020", 7: "BT.2020 constant luminance", 8: "SMPTE 240M"]
            throw .usage("--png-dir: \(name) is \(encodings[encoding] ?? "YCbCr encoding \(encoding)") \(quantization == 1 ? "full" : "limited") range (colorspace \(format.colorspace)); libv4lconvert converts only BT.601 limited range, so the colours would be wrong; capture raw or y4m and convert with ffmpeg")
        }
    }

    /// - Parameter device: the device; a kernel device's descriptor is given to `v4lconvert_create`,
    ///   other backends (libv4l2, the simulator) get libv4lconvert's ioctls through ``DeviceBackend``.
    public init(directory: String, every: Int, format: ImageFormat, device: VideoDevice) throws(FrameDumpError) {
        guard every >= 1 else { throw .usage("--every: must be at least 1, got \(every)") }
        guard let source = PNGSink.singlePlanarEquivalent(format.pixelFormat, planeCount: format.planes.count) else {
            throw .usage("--png-dir: the multi-planar pixel format \(format.pixelFormat) cannot be converted to RGB24")
        }
        try PNGSink.checkCorrectness(format)
        let converter: OpaquePointer?
        if device.backend is KernelBackend {
            converter = v4lconvert_create(device.descriptor)
            bridge = nil
        } else {
            let bridge = BackendIoctlBridge(backend: device.backend)
            converter = v4lconvert_create_with_dev_ops(device.descriptor, bridge.context, bridge.operations)
            self.bridge = bridge
        }
        guard let converter else {
            throw .runtime("--png-dir: v4lconvert_create failed for \(device.path): \(Errno.current)")
        }
        self.converter = converter
        self.directory = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        self.every = every
        self.format = format
        let width = Int(format.width), height = Int(format.height)
        var total = 0
        for plane in format.planes { total += Int(plane.sizeImage) }
        contiguous = UnsafeMutableRawBufferPointer.allocate(byteCount: max(total, 1), alignment: 64)
        contiguous.initializeMemory(as: UInt8.self, repeating: 0)
        rgb = UnsafeMutableRawBufferPointer.allocate(byteCount: max(width * height * 3, 1), alignment: 64)
        sourceFormat.type = BufferType.videoCapture.rawValue
        sourceFormat.fmt.pix.width = format.width
        sourceFormat.fmt.pix.height = format.height
        sourceFormat.fmt.pix.pixelformat = source.rawValue
        sourceFormat.fmt.pix.field = 1
        sourceFormat.fmt.pix.bytesperline = format.planes.first?.bytesPerLine ?? 0
        sourceFormat.fmt.pix.sizeimage = UInt32(total)
        sourceFormat.fmt.pix.colorspace = format.colorspace
        destinationFormat.type = BufferType.videoCapture.rawValue
        destinationFormat.fmt.pix.width = format.width
        destinationFormat.fmt.pix.height = format.height
        destinationFormat.fmt.pix.pixelformat = FourCC.rgb24.rawValue
        destinationFormat.fmt.pix.field = 1
        destinationFormat.fmt.pix.bytesperline = format.width * 3
        destinationFormat.fmt.pix.sizeimage = format.width * format.height * 3
        let compressed = ["MJPG", "JPEG", "H264", "HEVC", "VP80", "VP90"].contains(format.pixelFormat.description)
        if !compressed {
            // A trial conversion of a blank frame, so an unsupported format is reported before streaming.
            let result = convert(size: total)
            if result < 0 {
                let message = String(cString: v4lconvert_get_error_message(converter))
                throw .usage("--png-dir: libv4lconvert cannot convert \(format.pixelFormat) to RGB24: \(message.isEmpty ? "unsupported" : message)")
            }
        }
    }

    deinit {
        v4lconvert_destroy(converter)
        contiguous.deallocate()
        rgb.deallocate()
    }

    /// Makes the directory if it does not exist (after streaming started).
    public func createDirectory() throws(FrameDumpError) {
        var status = stat()
        if stat(directory, &status) == 0 { return }
        if mkdir(directory, 0o755) != 0 && Errno.current != Errno(rawValue: EEXIST) {
            throw .runtime("--png-dir \(directory): mkdir failed: \(Errno.current)")
        }
    }

    private func convert(size: Int) -> Int32 {
        v4lconvert_convert(converter, &sourceFormat, &destinationFormat,
                           contiguous.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(size),
                           rgb.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(rgb.count))
    }

    public func write(_ payload: borrowing FramePayload, index: Int) throws(FrameDumpError) {
        guard index % every == 0 else { return }
        var size = 0
        for plane in 0..<payload.planeCount {
            let bytes = payload.unsafePlaneBytes(plane)
            let count = min(bytes.count, contiguous.count - size)
            if count > 0, let base = bytes.baseAddress {
                (contiguous.baseAddress! + size).copyMemory(from: base, byteCount: count)
            }
            size += count
        }
        if convert(size: size) < 0 {
            let message = String(cString: v4lconvert_get_error_message(converter))
            throw .runtime("--png-dir: libv4lconvert could not convert frame \(index) (\(format.pixelFormat) \(format.width)x\(format.height)) to RGB24: \(message)")
        }
        let path = "\(directory)/\(PNGSink.fileName(index: index))"
        let result = errorText.withUnsafeMutableBufferPointer { text in
            cv4l2_write_png_rgb24_level(path, rgb.baseAddress!.assumingMemoryBound(to: UInt8.self), format.width, format.height,
                                        Int(format.width) * 3, PNGEncoding.compressionLevel, PNGEncoding.filters,
                                        text.baseAddress, text.count)
        }
        if result != 0 {
            let message = errorText.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw .runtime("--png-dir: \(path): \(message)")
        }
        filesWritten += 1
    }

    public func finish() throws(FrameDumpError) {}
}

/// A `struct libv4l_dev_ops` whose ioctl goes through a ``DeviceBackend``, so libv4lconvert can
/// query a device that is not a kernel descriptor (the simulator, or libv4l2's descriptors).
final class BackendIoctlBridge {
    private final class Box {
        let backend: any DeviceBackend
        init(backend: any DeviceBackend) { self.backend = backend }
    }

    /// The `dev_ops_priv` pointer (a retained box).
    let context: UnsafeMutableRawPointer
    /// The `struct libv4l_dev_ops`: init, close, ioctl, read, write and seven reserved pointers.
    private let table: UnsafeMutablePointer<UnsafeRawPointer?>
    var operations: OpaquePointer { OpaquePointer(table) }

    init(backend: any DeviceBackend) {
        context = Unmanaged.passRetained(Box(backend: backend)).toOpaque()
        table = UnsafeMutablePointer<UnsafeRawPointer?>.allocate(capacity: 12)
        table.initialize(repeating: nil, count: 12)
        let ioctl: @convention(c) (UnsafeMutableRawPointer?, Int32, UInt, UnsafeMutableRawPointer?) -> Int32 = { context, fd, request, argument in
            guard let context, let argument else {
                cv4l2_set_errno(EINVAL)
                return -1
            }
            let box = Unmanaged<Box>.fromOpaque(context).takeUnretainedValue()
            if let errno = box.backend.ioctl(fd, request: request, argument: argument) {
                cv4l2_set_errno(errno.rawValue)
                return -1
            }
            return 0
        }
        let read: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeMutableRawPointer?, Int) -> Int = { _, _, _, _ in
            cv4l2_set_errno(EINVAL)
            return -1
        }
        let write: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeRawPointer?, Int) -> Int = { _, _, _, _ in
            cv4l2_set_errno(EINVAL)
            return -1
        }
        table[2] = unsafeBitCast(ioctl, to: UnsafeRawPointer.self)
        table[3] = unsafeBitCast(read, to: UnsafeRawPointer.self)
        table[4] = unsafeBitCast(write, to: UnsafeRawPointer.self)
    }

    deinit {
        Unmanaged<Box>.fromOpaque(context).release()
        table.deallocate()
    }
}
