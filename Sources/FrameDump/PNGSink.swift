import CFrameDump
import CFrameConvert
import SystemPackage
import CV4L2
import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// How a format's pixels become the RGB24 of a PNG (issue 16): libswscale for the YCbCr, RGB,
/// greyscale and Bayer formats, told the frame's colorimetry from G_FMT and the driver's real
/// line lengths; framedump's own conversion for HSV, which swscale does not know.
struct PictureConversion: Equatable {
    /// One plane of the driver's layout: `groupBytes` bytes for every `horizontal` pixels of a
    /// row, one row for every `vertical` rows of the picture.
    struct Plane: Equatable {
        var groupBytes: Int
        var horizontal: Int = 1
        var vertical: Int = 1
        /// The bytes a row of a `width`-pixel picture needs.
        func rowBytes(_ width: Int) -> Int { (width + horizontal - 1) / horizontal * groupBytes }
        /// The rows a `height`-row picture needs.
        func rows(_ height: Int) -> Int { (height + vertical - 1) / vertical }
    }

    /// What is done to the staged planes before swscale reads them.
    enum Repack: Equatable {
        case none
        /// swscale's planes are the staged ones in this order (YV12's Cr before Cb).
        case order([Int])
        /// Swap bytes a and b of each `groupBytes` group of plane `plane` (VYUY to UYVY).
        case swap(plane: Int, groupBytes: Int, a: Int, b: Int)
        /// Split plane `plane` (pixels of `pixelBytes`) into one plane per offset: the staged
        /// planes before it, then these (NV16's CbCr to 422P's Cb and Cr; AYUV to 4:4:4 planar).
        case pick(plane: Int, pixelBytes: Int, offsets: [Int])
    }

    enum Kind: Equatable {
        /// Y'CbCr: the matrix from ycbcr_enc (or the colorspace), the range from quantization.
        case ycbcr
        /// Luma only (GREY, Y10...): full range unless quantization says limited.
        case luma
        /// R'G'B' (and Bayer): full range unless quantization says limited.
        case rgb
        /// HSV: hue range from hsv_enc; always full range.
        case hsv(pixelBytes: Int, firstByte: Int)
    }

    var kind: Kind
    /// The AVPixelFormat swscale reads (after `repack`); unused for HSV.
    var swscaleFormat: AVPixelFormat
    var planes: [Plane]
    var repack: Repack = .none
    /// Bayer mosaics need an even width and height.
    var needsEvenSize = false

    static func ycbcr(_ format: AVPixelFormat, _ planes: [Plane], _ repack: Repack = .none) -> PictureConversion {
        PictureConversion(kind: .ycbcr, swscaleFormat: format, planes: planes, repack: repack)
    }
    static func rgb(_ format: AVPixelFormat, bytes: Int) -> PictureConversion {
        PictureConversion(kind: .rgb, swscaleFormat: format, planes: [Plane(groupBytes: bytes)])
    }
    static func luma(_ format: AVPixelFormat, bytes: Int) -> PictureConversion {
        PictureConversion(kind: .luma, swscaleFormat: format, planes: [Plane(groupBytes: bytes)])
    }
    static func bayer(_ format: AVPixelFormat, bytes: Int) -> PictureConversion {
        PictureConversion(kind: .rgb, swscaleFormat: format, planes: [Plane(groupBytes: bytes)], needsEvenSize: true)
    }

    /// The conversion of every pixel format framedump turns into PNGs, by V4L2 fourcc (the
    /// multi-planar NM12, YM12... forms share their single-buffer layout, one plane per buffer).
    /// nil: refused before streaming.
    static func of(_ pixelFormat: FourCC) -> PictureConversion? {
        let y = Plane(groupBytes: 1)
        let yuv420 = [y, Plane(groupBytes: 1, horizontal: 2, vertical: 2), Plane(groupBytes: 1, horizontal: 2, vertical: 2)]
        let yuv422 = [y, Plane(groupBytes: 1, horizontal: 2), Plane(groupBytes: 1, horizontal: 2)]
        let nv420 = [y, Plane(groupBytes: 2, horizontal: 2, vertical: 2)]
        let nv422 = [y, Plane(groupBytes: 2, horizontal: 2)]
        let nv444 = [y, Plane(groupBytes: 2)]
        let packed422 = [Plane(groupBytes: 4, horizontal: 2)]
        let packed444 = [Plane(groupBytes: 4)]
        switch pixelFormat.description {
        case "YUYV": return .ycbcr(AV_PIX_FMT_YUYV422, packed422)
        case "UYVY": return .ycbcr(AV_PIX_FMT_UYVY422, packed422)
        case "YVYU": return .ycbcr(AV_PIX_FMT_YVYU422, packed422)
        case "VYUY": return .ycbcr(AV_PIX_FMT_UYVY422, packed422, .swap(plane: 0, groupBytes: 4, a: 0, b: 2))
        case "422P", "YM16": return .ycbcr(AV_PIX_FMT_YUV422P, yuv422)
        case "YM61": return .ycbcr(AV_PIX_FMT_YUV422P, yuv422, .order([0, 2, 1]))
        case "YM24": return .ycbcr(AV_PIX_FMT_YUV444P, [y, y, y])
        case "YM42": return .ycbcr(AV_PIX_FMT_YUV444P, [y, y, y], .order([0, 2, 1]))
        case "YU12", "YM12": return .ycbcr(AV_PIX_FMT_YUV420P, yuv420)
        case "YV12", "YM21": return .ycbcr(AV_PIX_FMT_YUV420P, yuv420, .order([0, 2, 1]))
        case "NV12", "NM12": return .ycbcr(AV_PIX_FMT_NV12, nv420)
        case "NV21", "NM21": return .ycbcr(AV_PIX_FMT_NV21, nv420)
        // swscale reads no NV16: its chroma is split into 422P's planes.
        case "NV16", "NM16": return .ycbcr(AV_PIX_FMT_YUV422P, nv422, .pick(plane: 1, pixelBytes: 2, offsets: [0, 1]))
        case "NV61", "NM61": return .ycbcr(AV_PIX_FMT_YUV422P, nv422, .pick(plane: 1, pixelBytes: 2, offsets: [1, 0]))
        case "NV24": return .ycbcr(AV_PIX_FMT_NV24, nv444)
        case "NV42": return .ycbcr(AV_PIX_FMT_NV42, nv444)
        // 8-bit packed 4:4:4 with alpha or padding (byte order as V4L2 defines it): to 4:4:4 planar.
        case "YUV4", "AYUV", "XYUV": return .ycbcr(AV_PIX_FMT_YUV444P, packed444, .pick(plane: 0, pixelBytes: 4, offsets: [1, 2, 3]))
        case "VUYA", "VUYX": return .ycbcr(AV_PIX_FMT_YUV444P, packed444, .pick(plane: 0, pixelBytes: 4, offsets: [2, 1, 0]))
        case "YUVA", "YUVX": return .ycbcr(AV_PIX_FMT_YUV444P, packed444, .pick(plane: 0, pixelBytes: 4, offsets: [0, 1, 2]))
        case "GREY": return .luma(AV_PIX_FMT_GRAY8, bytes: 1)
        case "Y10": return .luma(AV_PIX_FMT_GRAY10LE, bytes: 2)
        case "Y12": return .luma(AV_PIX_FMT_GRAY12LE, bytes: 2)
        case "Y16": return .luma(AV_PIX_FMT_GRAY16LE, bytes: 2)
        case "Y16 -BE": return .luma(AV_PIX_FMT_GRAY16BE, bytes: 2)
        case "RGB1": return .rgb(AV_PIX_FMT_RGB8, bytes: 1)
        case "RGBP": return .rgb(AV_PIX_FMT_RGB565LE, bytes: 2)
        case "RGBR": return .rgb(AV_PIX_FMT_RGB565BE, bytes: 2)
        case "R444", "XR12", "AR12": return .rgb(AV_PIX_FMT_RGB444LE, bytes: 2)
        case "XB12", "AB12": return .rgb(AV_PIX_FMT_BGR444LE, bytes: 2)
        case "RGBO", "XR15", "AR15": return .rgb(AV_PIX_FMT_RGB555LE, bytes: 2)
        case "XB15", "AB15": return .rgb(AV_PIX_FMT_BGR555LE, bytes: 2)
        case "RGBQ", "XR15-BE", "AR15-BE": return .rgb(AV_PIX_FMT_RGB555BE, bytes: 2)
        case "RGB3": return .rgb(AV_PIX_FMT_RGB24, bytes: 3)
        case "BGR3": return .rgb(AV_PIX_FMT_BGR24, bytes: 3)
        // 32-bit RGB by byte order in memory; alpha is dropped (a PNG here is RGB).
        case "RGB4", "BX24", "BA24": return .rgb(AV_PIX_FMT_0RGB, bytes: 4)
        case "BGR4", "XR24", "AR24": return .rgb(AV_PIX_FMT_BGR0, bytes: 4)
        case "XB24", "AB24": return .rgb(AV_PIX_FMT_RGB0, bytes: 4)
        case "RX24", "RA24": return .rgb(AV_PIX_FMT_0BGR, bytes: 4)
        case "BA81": return .bayer(AV_PIX_FMT_BAYER_BGGR8, bytes: 1)
        case "GBRG": return .bayer(AV_PIX_FMT_BAYER_GBRG8, bytes: 1)
        case "GRBG": return .bayer(AV_PIX_FMT_BAYER_GRBG8, bytes: 1)
        case "RGGB": return .bayer(AV_PIX_FMT_BAYER_RGGB8, bytes: 1)
        case "BYR2": return .bayer(AV_PIX_FMT_BAYER_BGGR16LE, bytes: 2)
        case "GB16": return .bayer(AV_PIX_FMT_BAYER_GBRG16LE, bytes: 2)
        case "GR16": return .bayer(AV_PIX_FMT_BAYER_GRBG16LE, bytes: 2)
        case "RG16": return .bayer(AV_PIX_FMT_BAYER_RGGB16LE, bytes: 2)
        case "HSV3": return PictureConversion(kind: .hsv(pixelBytes: 3, firstByte: 0), swscaleFormat: AV_PIX_FMT_NONE, planes: [Plane(groupBytes: 3)])
        case "HSV4": return PictureConversion(kind: .hsv(pixelBytes: 4, firstByte: 1), swscaleFormat: AV_PIX_FMT_NONE, planes: [Plane(groupBytes: 4)])
        default: return nil
        }
    }

    /// The formats `of` converts, for messages.
    static let supportedNames = "YUYV, UYVY, YVYU, VYUY, 422P, YU12, YV12, NV12, NV21, NV16, NV61, NV24, NV42, the 8-bit packed 4:4:4 YUV formats (YUV4, AYUV, XYUV, VUYA, VUYX, YUVA, YUVX), GREY, Y10, Y12, Y16, Y16 -BE, the RGB formats with a red-first or blue-first order (RGB1, RGBP, RGBR, R444, XR12, AR12, XB12, AB12, RGBO, XR15, AR15, XB15, AB15, RGBQ, XR15-BE, AR15-BE, RGB3, BGR3, RGB4, BGR4, BX24, BA24, XR24, AR24, XB24, AB24, RX24, RA24), 8- and 16-bit Bayer, HSV3, HSV4, their multi-planar forms and MJPEG"
}

/// The frame's colorimetry as the conversion uses it, with V4L2's DEFAULT values resolved.
struct PictureColorimetry: Equatable {
    /// SWS_CS_* (the Y'CbCr matrix); for R'G'B' and HSV unused.
    var matrix: Int32
    var fullRange: Bool
    /// 180 or 256 for HSV.
    var hueSteps: Int = 0
    /// For messages: "BT.709 limited range".
    var name: String

    static let encodingNames: [UInt32: String] = [1: "BT.601", 2: "BT.709", 3: "xvYCC 601", 4: "xvYCC 709", 5: "sYCC", 6: "BT.2020",
                                                   7: "BT.2020 constant luminance", 8: "SMPTE 240M"]

    /// V4L2_MAP_YCBCR_ENC_DEFAULT: REC709 and DCI-P3 are BT.709, BT2020 is BT.2020, SMPTE240M
    /// is SMPTE 240M, everything else BT.601.
    static func defaultEncoding(colorspace: UInt32) -> UInt32 {
        switch colorspace {
        case 3, 12: return 2
        case 10: return 6
        case 2: return 8
        default: return 1
        }
    }

    /// V4L2_MAP_QUANTIZATION_DEFAULT: full range for R'G'B', HSV and the JPEG colorspace,
    /// limited range for Y'CbCr. Luma-only formats (GREY, Y10...) count as not Y'CbCr, as the
    /// kernel's test-pattern generator passes them to the macro (`color_enc != YCBCR`) and
    /// v4l2-ctl reports them: full range.
    static func defaultFullRange(isRGBOrHSV: Bool, colorspace: UInt32) -> Bool {
        isRGBOrHSV || colorspace == 7
    }

    /// The colorimetry of `format` for `kind`; a usage error when it cannot be converted right.
    static func resolve(_ format: ImageFormat, kind: PictureConversion.Kind) throws(FrameDumpError) -> PictureColorimetry {
        let name = "\(format.pixelFormat) \(format.width)x\(format.height)"
        switch kind {
        case .hsv:
            switch format.ycbcrEncoding {
            case 128: return PictureColorimetry(matrix: 0, fullRange: true, hueSteps: 180, name: "HSV, hue 0-179")
            case 129: return PictureColorimetry(matrix: 0, fullRange: true, hueSteps: 256, name: "HSV, hue 0-255")
            default:
                throw .usage("--png-dir: \(name): the driver states no HSV encoding (hsv_enc \(format.ycbcrEncoding); V4L2 defines 128, hue 0-179, and 129, hue 0-255), so the hue cannot be read right; set it (vivid: --set-ctrl hsv_encoding=0 or 1, a value other than the one in force, with this format) or capture raw")
            }
        case .rgb:
            let full = format.quantization == 0 ? defaultFullRange(isRGBOrHSV: true, colorspace: format.colorspace) : format.quantization == 1
            return PictureColorimetry(matrix: SWS_CS_DEFAULT, fullRange: full, name: full ? "full-range R'G'B'" : "limited-range R'G'B'")
        case .luma:
            let full = format.quantization == 0 ? defaultFullRange(isRGBOrHSV: true, colorspace: format.colorspace) : format.quantization == 1
            return PictureColorimetry(matrix: SWS_CS_DEFAULT, fullRange: full, name: full ? "full-range luma" : "limited-range luma")
        case .ycbcr:
            let encoding = format.ycbcrEncoding == 0 ? defaultEncoding(colorspace: format.colorspace) : format.ycbcrEncoding
            let full = format.quantization == 0 ? defaultFullRange(isRGBOrHSV: false, colorspace: format.colorspace) : format.quantization == 1
            let range = full ? "full range" : "limited range"
            let matrix: Int32
            switch encoding {
            case 1, 3, 5: matrix = SWS_CS_ITU601   // xvYCC and sYCC use the BT.601 matrix
            case 2, 4: matrix = SWS_CS_ITU709
            case 6: matrix = SWS_CS_BT2020
            case 8: matrix = SWS_CS_SMPTE240M
            default:
                throw .usage("--png-dir: \(name) is \(encodingNames[encoding] ?? "YCbCr encoding \(encoding)") (colorspace \(format.colorspace)), which libswscale cannot convert; capture raw or y4m instead")
            }
            return PictureColorimetry(matrix: matrix, fullRange: full, name: "\(encodingNames[encoding] ?? "?") \(range)")
        }
    }
}

/// Writes PNG pictures of every `every`-th frame (`frame-000000.png`, numbered by frame index)
/// into a directory. Each frame's planes are staged with the driver's bytesperline (padded
/// where an odd size leaves a row or a chroma sample short), converted to RGB24 with
/// libswscale told the frame's colorimetry (or, for HSV, by ``cfc_hsv_to_rgb24``), and written
/// with libpng, whole or not at all.
public final class PNGSink: FrameSink {
    public let directory: String
    public let every: Int
    public let format: ImageFormat
    /// PNG files written so far.
    public private(set) var filesWritten = 0
    let conversion: PictureConversion
    let colorimetry: PictureColorimetry
    private let scaler: OpaquePointer?
    /// The staged planes: the driver's layout, each with its stride and row count.
    private var staged: [(buffer: UnsafeMutableRawBufferPointer, stride: Int, rowBytes: Int, rows: Int)] = []
    /// Planes made by a `.pick` repack.
    private var picked: [(buffer: UnsafeMutableRawBufferPointer, stride: Int)] = []
    private let layout: [(offset: Int, stride: Int, size: Int)]
    private let minimum: [Int]
    private let rgb: UnsafeMutableRawBufferPointer
    private var errorText = [CChar](repeating: 0, count: 512)

    /// The file name of frame `index`.
    public static func fileName(index: Int) -> String {
        var digits = String(index)
        while digits.count < 6 { digits = "0" + digits }
        return "frame-\(digits).png"
    }

    /// Checks, before anything is captured, that `directory` exists and is writable, or that it
    /// can be created.
    public static func checkDirectory(_ directory: String) throws(FrameDumpError) {
        try OutputDirectory.check(directory, option: "--png-dir")
    }

    /// Checks, before streaming, that `format` converts to a correct PNG: a usage error naming
    /// the format otherwise.
    public static func checkFormat(_ format: ImageFormat) throws(FrameDumpError) {
        _ = try plan(format)
    }

    /// The driver's layout of each plane: where it starts (in its buffer), its stride and size.
    /// A multi-planar format has one buffer per plane, with its own bytesperline. A single
    /// buffer holding several planes follows V4L2 (and vivid's generator): plane p's stride is
    /// bytesperline scaled by its bytes per pixel, its size stride x height / vertical subsampling.
    static func driverLayout(_ format: ImageFormat, _ conversion: PictureConversion) -> [(offset: Int, stride: Int, size: Int)] {
        let height = Int(format.height)
        if format.planes.count > 1 {
            return format.planes.map { (0, Int($0.bytesPerLine), Int($0.sizeImage)) }
        }
        let line = Int(format.planes.first?.bytesPerLine ?? 0)
        let first = conversion.planes[0]
        var offset = 0
        var result: [(offset: Int, stride: Int, size: Int)] = []
        for (index, plane) in conversion.planes.enumerated() {
            let stride = index == 0 ? line : line * plane.groupBytes * first.horizontal / (plane.horizontal * first.groupBytes)
            let size = index == conversion.planes.count - 1 && conversion.planes.count == 1
                ? Int(format.planes.first?.sizeImage ?? 0) : stride * height / plane.vertical
            result.append((offset, stride, size))
            offset += size
        }
        return result
    }

    /// The fewest bytes each buffer must bring for a picture: sizeimage, or less where an odd
    /// size leaves the driver's last subsampled row or sample short (vivid's NV12 at 641x361
    /// answers S_FMT with a sizeimage of 347101 and fills 346921 bytes, all the picture needs).
    static func minimumBytes(_ format: ImageFormat, _ conversion: PictureConversion) -> [Int] {
        let width = Int(format.width), height = Int(format.height)
        var needed: [Int] = []
        for (plane, layout) in zip(conversion.planes, driverLayout(format, conversion)) {
            let rowBytes = plane.rowBytes(width), rows = plane.rows(height)
            let shortRow = plane.horizontal > 1 && width % plane.horizontal != 0 ? plane.groupBytes : 0
            let shortRows = plane.vertical > 1 && height % plane.vertical != 0 ? 1 : 0
            needed.append(layout.offset + layout.stride * max(rows - shortRows - 1, 0) + rowBytes - shortRow)
        }
        if format.planes.count > 1 {
            return zip(needed, format.planes).map { min($0, Int($1.sizeImage)) }
        }
        return [min(needed.max() ?? 0, Int(format.planes.first?.sizeImage ?? 0))]
    }

    /// The conversion and colorimetry of `format`, or a usage error.
    static func plan(_ format: ImageFormat) throws(FrameDumpError) -> (PictureConversion, PictureColorimetry) {
        let name = "\(format.pixelFormat) \(format.width)x\(format.height)"
        guard let conversion = PictureConversion.of(format.pixelFormat) else {
            throw .usage("--png-dir: \(format.pixelFormat) frames cannot be converted to a correct PNG (framedump converts \(PictureConversion.supportedNames)); capture raw (-o FILE) instead")
        }
        if format.planes.count > 1 && format.planes.count != conversion.planes.count {
            throw .usage("--png-dir: \(name): the driver gives \(format.planes.count) planes where \(conversion.planes.count) are expected")
        }
        if conversion.needsEvenSize && (format.width % 2 != 0 || format.height % 2 != 0) {
            throw .usage("--png-dir: \(name): a Bayer mosaic needs an even width and height for a correct picture; pick another --size")
        }
        let width = Int(format.width), height = Int(format.height)
        for (index, (plane, layout)) in zip(conversion.planes, driverLayout(format, conversion)).enumerated() {
            // An odd size may leave the last sample of a row or the last row of a subsampled
            // plane short (vivid's NV12 at 641x361): that one is repeated from its neighbour.
            // Anything shorter is a layout the picture cannot be read from.
            let rowBytes = plane.rowBytes(width), rows = plane.rows(height)
            let shortRow = plane.horizontal > 1 && width % plane.horizontal != 0 ? plane.groupBytes : 0
            let shortRows = plane.vertical > 1 && height % plane.vertical != 0 ? 1 : 0
            if layout.stride < rowBytes - shortRow || layout.size < layout.stride * (rows - shortRows - 1) + rowBytes - shortRow {
                throw .usage("--png-dir: \(name): plane \(index) of the driver's layout (\(layout.stride) bytes per line, \(layout.size) bytes) cannot hold \(rows) rows of \(rowBytes) bytes; capture raw instead")
            }
        }
        return (conversion, try PictureColorimetry.resolve(format, kind: conversion.kind))
    }

    public init(directory: String, every: Int, format: ImageFormat) throws(FrameDumpError) {
        guard every >= 1 else { throw .usage("--every: must be at least 1, got \(every)") }
        (conversion, colorimetry) = try PNGSink.plan(format)
        self.directory = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        self.every = every
        self.format = format
        let width = Int(format.width), height = Int(format.height)
        layout = PNGSink.driverLayout(format, conversion)
        minimum = PNGSink.minimumBytes(format, conversion)
        rgb = UnsafeMutableRawBufferPointer.allocate(byteCount: max(width * height * 3, 1), alignment: 64)
        // Staging: the driver's stride where it holds a row, else the row rounded up to 64 bytes;
        // 64 bytes of slack after the last row for swscale's vector loads.
        for (plane, layout) in zip(conversion.planes, layout) {
            let rowBytes = plane.rowBytes(width), rows = plane.rows(height)
            let stride = layout.stride >= rowBytes ? layout.stride : (rowBytes + 63) / 64 * 64
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: stride * rows + 64, alignment: 64)
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            staged.append((buffer, stride, rowBytes, rows))
        }
        if case let .pick(plane, pixelBytes, offsets) = conversion.repack {
            let source = conversion.planes[plane]
            let samples = source.rowBytes(width) / pixelBytes, rows = source.rows(height)
            let stride = (samples + 63) / 64 * 64
            for _ in offsets {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: stride * rows + 64, alignment: 64)
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
                picked.append((buffer, stride))
            }
        }
        if case .hsv = conversion.kind {
            scaler = nil
        } else {
            var text = [CChar](repeating: 0, count: 512)
            let swscaleFormat = conversion.swscaleFormat.rawValue, matrix = colorimetry.matrix, full: Int32 = colorimetry.fullRange ? 1 : 0
            let made = text.withUnsafeMutableBufferPointer { text in
                cfc_scaler_create(swscaleFormat, Int32(width), Int32(height), matrix, full, text.baseAddress, text.count)
            }
            guard let made else {
                let message = text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                rgb.deallocate()
                for plane in staged { plane.buffer.deallocate() }
                for plane in picked { plane.buffer.deallocate() }
                throw .usage("--png-dir: \(format.pixelFormat) \(width)x\(height): \(message)")
            }
            scaler = made
        }
    }

    /// The former initialiser's shape, for callers that pass the device (the conversion needs none).
    public convenience init(directory: String, every: Int, format: ImageFormat, device: VideoDevice) throws(FrameDumpError) {
        try self.init(directory: directory, every: every, format: format)
    }

    deinit {
        if let scaler { cfc_scaler_destroy(scaler) }
        rgb.deallocate()
        for plane in staged { plane.buffer.deallocate() }
        for plane in picked { plane.buffer.deallocate() }
    }

    /// Makes the directory if it does not exist (after streaming started).
    public func createDirectory() throws(FrameDumpError) {
        var status = stat()
        if stat(directory, &status) == 0 { return }
        if mkdir(directory, 0o755) != 0 && Errno.current != Errno(rawValue: EEXIST) {
            throw .runtime("--png-dir \(directory): mkdir failed: \(Errno.current)")
        }
    }

    /// A frame must bring the bytes its picture needs (``minimumBytes(_:_:)``), per buffer.
    private func checkSize(_ planes: [UnsafeRawBufferPointer], index: Int) throws(FrameDumpError) {
        for (k, bytes) in planes.enumerated() {
            let expected = k < minimum.count ? minimum[k] : 0
            if bytes.count < expected {
                throw .runtime("--png-dir: frame \(index) (\(format.pixelFormat) \(format.width)x\(format.height)) has \(bytes.count) bytes in plane \(k), expected \(expected); no picture written")
            }
        }
    }

    /// Converts a frame's planes (one buffer per plane, or one buffer with every plane, as the
    /// driver delivers them) to packed RGB24 with `width * 3` bytes per row, the picture a PNG
    /// gets; valid until the next conversion.
    @discardableResult
    public func convert(_ planes: [UnsafeRawBufferPointer], index: Int = 0) throws(FrameDumpError) -> UnsafeRawBufferPointer {
        try checkSize(planes, index: index)
        let width = Int(format.width), height = Int(format.height)
        for (k, stage) in staged.enumerated() {
            let source: UnsafeRawBufferPointer
            let (offset, stride, size) = layout[k]
            if planes.count > 1 {
                source = planes[k]
            } else {
                let whole = planes[0]
                let start = min(offset, whole.count)
                source = UnsafeRawBufferPointer(rebasing: whole[start..<min(whole.count, start + size)])
            }
            cfc_copy_plane(stage.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), stage.stride, stage.rowBytes, stage.rows,
                           source.baseAddress?.assumingMemoryBound(to: UInt8.self), stride, source.count,
                           conversion.planes[k].groupBytes)
        }
        let out = rgb.baseAddress!.assumingMemoryBound(to: UInt8.self)
        if case let .hsv(pixelBytes, firstByte) = conversion.kind {
            cfc_hsv_to_rgb24(staged[0].buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), staged[0].stride, pixelBytes, firstByte,
                             width, height, Int32(colorimetry.hueSteps), out, width * 3)
            return UnsafeRawBufferPointer(rgb)
        }
        var pointers: [UnsafePointer<UInt8>?] = staged.map { UnsafePointer($0.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
        var strides: [Int32] = staged.map { Int32($0.stride) }
        switch conversion.repack {
        case .none:
            break
        case let .order(order):
            pointers = order.map { pointers[$0] }
            strides = order.map { strides[$0] }
        case let .swap(plane, groupBytes, a, b):
            let stage = staged[plane]
            cfc_swap_bytes(stage.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), stage.stride, stage.rowBytes / groupBytes,
                           stage.rows, groupBytes, a, b)
        case let .pick(plane, pixelBytes, offsets):
            let stage = staged[plane]
            var destinations: [UnsafeMutablePointer<UInt8>?] = picked.map { $0.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self) }
            let offsets32 = offsets.map { Int32($0) }
            cfc_pick_bytes(stage.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), stage.stride, pixelBytes,
                           stage.rowBytes / pixelBytes, stage.rows, offsets32, Int32(offsets.count), &destinations, picked[0].stride)
            pointers = Array(pointers[..<plane]) + picked.map { UnsafePointer($0.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
            strides = Array(strides[..<plane]) + picked.map { Int32($0.stride) }
        }
        while pointers.count < 4 { pointers.append(nil); strides.append(0) }
        let rows = cfc_scaler_convert(scaler, pointers, strides, out, Int32(width * 3))
        if rows != Int32(height) {
            throw .runtime("--png-dir: libswscale could not convert frame \(index) (\(format.pixelFormat) \(width)x\(height)) to RGB24 (sws_scale answered \(rows))")
        }
        // swscale applies no range to R'G'B' nor to greyscale sources (checked: GRAY8 16 stays
        // 16): limited range is expanded here.
        switch conversion.kind {
        case .rgb, .luma:
            if !colorimetry.fullRange { cfc_expand_limited_rgb(out, width * 3, width * 3, height) }
        default:
            break
        }
        return UnsafeRawBufferPointer(rgb)
    }

    public func write(_ payload: borrowing FramePayload, index: Int) throws(FrameDumpError) {
        guard index % every == 0 else { return }
        var planes: [UnsafeRawBufferPointer] = []
        for plane in 0..<payload.planeCount { planes.append(payload.unsafePlaneBytes(plane)) }
        try convert(planes, index: index)
        let path = "\(directory)/\(PNGSink.fileName(index: index))"
        let result = errorText.withUnsafeMutableBufferPointer { text in
            cframedump_write_png_rgb24_level(path, rgb.baseAddress!.assumingMemoryBound(to: UInt8.self), format.width, format.height,
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
