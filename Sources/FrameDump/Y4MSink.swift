import FrameBridge
import V4L2

/// Converts frames to the planar layouts of YUV4MPEG2, in a preallocated buffer.
///
/// - YUYV, UYVY: 4:2:2 planar (`C422`)
/// - NV12, NM12: 4:2:0 planar (`C420jpeg`), the chroma de-interleaved
/// - YU12, YM12: 4:2:0 planar (`C420jpeg`), copied
/// - GREY: `Cmono`
public final class Y4MConverter {
    /// The pixel formats that can be written as YUV4MPEG2.
    public static let supportedFormats: [FourCC] = [.yuyv, .uyvy, .nv12, .nv12m, .yuv420, .yuv420m, .grey]

    public let pixelFormat: FourCC
    public let width: Int
    public let height: Int
    /// Bytes per line of each source plane.
    private let strides: [Int]
    /// The converted frame: the Y plane, then U and V (none for mono).
    public let buffer: UnsafeMutableRawBufferPointer

    /// The Y4M colour space tag (`422`, `420jpeg`, `mono`).
    public var colorspaceTag: String {
        switch pixelFormat {
        case .yuyv, .uyvy: return "422"
        case .grey: return "mono"
        default: return "420jpeg"
        }
    }

    var chromaWidth: Int {
        switch pixelFormat {
        case .grey: return 0
        default: return (width + 1) / 2
        }
    }

    var chromaHeight: Int {
        switch pixelFormat {
        case .grey: return 0
        case .yuyv, .uyvy: return height
        default: return (height + 1) / 2
        }
    }

    /// Bytes of one converted frame.
    public var frameSize: Int { width * height + 2 * chromaWidth * chromaHeight }

    /// Checks that `format` can be converted; the error names the format and the supported ones.
    public static func check(_ format: ImageFormat) throws(FrameDumpError) {
        guard supportedFormats.contains(format.pixelFormat) else {
            throw .usage("--container y4m: pixel format \(format.pixelFormat) cannot be written as YUV4MPEG2; supported: \(supportedFormats.map(\.description).joined(separator: ", ")) (use --container raw or --pixel-format)")
        }
        if (format.pixelFormat == .yuyv || format.pixelFormat == .uyvy) && format.width % 2 != 0 {
            throw .usage("--container y4m: \(format.pixelFormat) needs an even width, the format is \(format.width)x\(format.height)")
        }
        let planes = expectedPlaneCount(format.pixelFormat)
        if format.planes.count != planes {
            throw .usage("--container y4m: \(format.pixelFormat) should have \(planes) plane(s), the driver reports \(format.planes.count)")
        }
        // The driver's layout (bytesperline, sizeimage) is known before STREAMON: a plane too
        // small for the picture fails here, before any file is created, instead of at frame 0.
        let strides = Y4MConverter.strides(format)
        for (index, need) in requiredPlaneBytes(format, strides: strides).enumerated() {
            let plane = format.planes[index]
            let rowBytes = minimumRowBytes(format.pixelFormat, width: Int(format.width), plane: index)
            if strides[index] < rowBytes || (plane.sizeImage > 0 && Int(plane.sizeImage) < need) {
                throw .usage("--container y4m: the driver's \(format.pixelFormat) \(format.width)x\(format.height) layout (plane \(index): \(plane.bytesPerLine) bytes per line, sizeimage \(plane.sizeImage)) is too small for the picture (\(need) bytes needed); pick another --size (even dimensions) or use --container raw")
            }
        }
    }

    /// Bytes per line of each source plane: the driver's, or the format's natural one when it reports 0.
    static func strides(_ format: ImageFormat) -> [Int] {
        format.planes.enumerated().map { index, plane in
            if plane.bytesPerLine != 0 { return Int(plane.bytesPerLine) }
            switch format.pixelFormat {
            case .yuyv, .uyvy: return Int(format.width) * 2
            case .yuv420m: return index == 0 ? Int(format.width) : (Int(format.width) + 1) / 2
            default: return Int(format.width)
            }
        }
    }

    /// The bytes of one row of plane `plane` that the conversion reads.
    static func minimumRowBytes(_ pixelFormat: FourCC, width: Int, plane: Int) -> Int {
        let chromaWidth = (width + 1) / 2
        switch pixelFormat {
        case .yuyv, .uyvy: return width * 2
        case .nv12: return max(width, chromaWidth * 2)
        case .nv12m: return plane == 0 ? width : chromaWidth * 2
        case .yuv420: return max(width, 2 * chromaWidth)
        case .yuv420m: return plane == 0 ? width : chromaWidth
        default: return width
        }
    }

    /// The bytes of each plane the conversion reads, the same sums as ``convert(planeCount:plane:)`` checks.
    static func requiredPlaneBytes(_ format: ImageFormat, strides: [Int]) -> [Int] {
        let width = Int(format.width), height = Int(format.height)
        let chromaWidth = (width + 1) / 2, chromaHeight = (height + 1) / 2
        func rows(_ count: Int, _ stride: Int, _ rowBytes: Int) -> Int { count == 0 ? 0 : (count - 1) * stride + rowBytes }
        switch format.pixelFormat {
        case .yuyv, .uyvy: return [rows(height, strides[0], width * 2)]
        case .grey: return [rows(height, strides[0], width)]
        case .nv12: return [rows(height + chromaHeight, strides[0], max(width, chromaWidth * 2))]
        case .nv12m: return [rows(height, strides[0], width), rows(chromaHeight, strides[1], chromaWidth * 2)]
        case .yuv420: return [strides[0] * height + 2 * (strides[0] / 2) * chromaHeight]
        case .yuv420m:
            return [rows(height, strides[0], width), rows(chromaHeight, strides[1], chromaWidth), rows(chromaHeight, strides[2], chromaWidth)]
        default: return format.planes.map { _ in 0 }
        }
    }

    static func expectedPlaneCount(_ pixelFormat: FourCC) -> Int {
        switch pixelFormat {
        case .nv12m: return 2
        case .yuv420m: return 3
        default: return 1
        }
    }

    public init(format: ImageFormat) throws(FrameDumpError) {
        try Y4MConverter.check(format)
        pixelFormat = format.pixelFormat
        width = Int(format.width)
        height = Int(format.height)
        let strides = Y4MConverter.strides(format)
        self.strides = strides
        let size = Int(format.width) * Int(format.height)
            + 2 * ((format.pixelFormat == .grey) ? 0 : (Int(format.width) + 1) / 2
                   * ((format.pixelFormat == .yuyv || format.pixelFormat == .uyvy) ? Int(format.height) : (Int(format.height) + 1) / 2))
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 64)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        buffer.deallocate()
    }

    /// Converts one frame whose planes' payloads `plane(i)` gives into ``buffer``.
    public func convert(planeCount: Int, plane: (Int) -> UnsafeRawBufferPointer) throws(FrameDumpError) {
        let expected = Y4MConverter.expectedPlaneCount(pixelFormat)
        guard planeCount >= expected else {
            throw .runtime("y4m: a \(pixelFormat) frame has \(planeCount) plane(s), expected \(expected)")
        }
        let out = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let lumaSize = width * height
        let chromaSize = chromaWidth * chromaHeight
        let outU = out + lumaSize
        let outV = outU + chromaSize
        switch pixelFormat {
        case .yuyv, .uyvy:
            let source = try bytes(plane(0), rows: height, stride: strides[0], rowBytes: width * 2, plane: 0)
            let yFirst = pixelFormat == .yuyv
            let pairs = width / 2
            for row in 0..<height {
                let line = source + row * strides[0]
                let yRow = out + row * width
                let uRow = outU + row * chromaWidth
                let vRow = outV + row * chromaWidth
                for pair in 0..<pairs {
                    let p = line + pair * 4
                    if yFirst {
                        yRow[2 * pair] = p[0]
                        uRow[pair] = p[1]
                        yRow[2 * pair + 1] = p[2]
                        vRow[pair] = p[3]
                    } else {
                        uRow[pair] = p[0]
                        yRow[2 * pair] = p[1]
                        vRow[pair] = p[2]
                        yRow[2 * pair + 1] = p[3]
                    }
                }
            }
        case .grey:
            let source = try bytes(plane(0), rows: height, stride: strides[0], rowBytes: width, plane: 0)
            copyRows(from: source, stride: strides[0], to: out, rowBytes: width, rows: height)
        case .nv12, .nv12m:
            let luma: UnsafePointer<UInt8>
            let chroma: UnsafePointer<UInt8>
            let chromaStride: Int
            if pixelFormat == .nv12 {
                let stride = strides[0]
                luma = try bytes(plane(0), rows: height + chromaHeight, stride: stride, rowBytes: max(width, chromaWidth * 2), plane: 0)
                chroma = luma + stride * height
                chromaStride = stride
            } else {
                luma = try bytes(plane(0), rows: height, stride: strides[0], rowBytes: width, plane: 0)
                chroma = try bytes(plane(1), rows: chromaHeight, stride: strides[1], rowBytes: chromaWidth * 2, plane: 1)
                chromaStride = strides[1]
            }
            copyRows(from: luma, stride: strides[0], to: out, rowBytes: width, rows: height)
            for row in 0..<chromaHeight {
                let line = chroma + row * chromaStride
                let uRow = outU + row * chromaWidth
                let vRow = outV + row * chromaWidth
                for i in 0..<chromaWidth {
                    uRow[i] = line[2 * i]
                    vRow[i] = line[2 * i + 1]
                }
            }
        default: // YU12, YM12
            if pixelFormat == .yuv420 {
                let stride = strides[0]
                let cStride = stride / 2
                let need = stride * height + 2 * cStride * chromaHeight
                let source = try bytes(plane(0), count: need, plane: 0)
                copyRows(from: source, stride: stride, to: out, rowBytes: width, rows: height)
                copyRows(from: source + stride * height, stride: cStride, to: outU, rowBytes: chromaWidth, rows: chromaHeight)
                copyRows(from: source + stride * height + cStride * chromaHeight, stride: cStride, to: outV,
                         rowBytes: chromaWidth, rows: chromaHeight)
            } else {
                let y = try bytes(plane(0), rows: height, stride: strides[0], rowBytes: width, plane: 0)
                let u = try bytes(plane(1), rows: chromaHeight, stride: strides[1], rowBytes: chromaWidth, plane: 1)
                let v = try bytes(plane(2), rows: chromaHeight, stride: strides[2], rowBytes: chromaWidth, plane: 2)
                copyRows(from: y, stride: strides[0], to: out, rowBytes: width, rows: height)
                copyRows(from: u, stride: strides[1], to: outU, rowBytes: chromaWidth, rows: chromaHeight)
                copyRows(from: v, stride: strides[2], to: outV, rowBytes: chromaWidth, rows: chromaHeight)
            }
        }
    }

    /// The plane's bytes, after checking it holds `rows` rows of `rowBytes` bytes `stride` apart.
    private func bytes(_ source: UnsafeRawBufferPointer, rows: Int, stride: Int, rowBytes: Int, plane: Int) throws(FrameDumpError) -> UnsafePointer<UInt8> {
        let need = rows == 0 ? 0 : (rows - 1) * stride + rowBytes
        return try bytes(source, count: need, plane: plane)
    }

    private func bytes(_ source: UnsafeRawBufferPointer, count: Int, plane: Int) throws(FrameDumpError) -> UnsafePointer<UInt8> {
        guard source.count >= count, let base = source.baseAddress else {
            throw .runtime("y4m: plane \(plane) of a \(pixelFormat) \(width)x\(height) frame has \(source.count) bytes, expected at least \(count)")
        }
        return base.assumingMemoryBound(to: UInt8.self)
    }

    private func copyRows(from source: UnsafePointer<UInt8>, stride: Int, to destination: UnsafeMutablePointer<UInt8>, rowBytes: Int, rows: Int) {
        if stride == rowBytes {
            destination.update(from: source, count: rowBytes * rows)
            return
        }
        for row in 0..<rows {
            (destination + row * rowBytes).update(from: source + row * stride, count: rowBytes)
        }
    }
}

/// Writes a YUV4MPEG2 stream: `YUV4MPEG2 W.. H.. F<num>:<den> I<p|t|b> A1:1 C<tag>` and, per frame,
/// `FRAME\n` and the planar picture, with one writev per frame.
public final class Y4MSink: FrameSink {
    public let output: FrameOutput
    public let converter: Y4MConverter
    /// The frame rate in the header, as numerator:denominator frames per second.
    public let rate: (numerator: UInt32, denominator: UInt32)
    private let frameTag: UnsafeMutableRawBufferPointer
    /// The header, until the first frame carries it.
    private var pendingHeader: UnsafeMutableRawBufferPointer?

    /// - Parameters:
    ///   - frameInterval: seconds per frame, from the driver; the header's rate is its inverse.
    ///   - framesPerSecond: used when the driver reports no interval (default 30).
    /// The header's interlace tag: `Ip`, `It` (top field first) or `Ib` (bottom first).
    public let interlace: String

    /// - Parameters:
    ///   - standard: the analog standard in force (G_STD), which says the field order of
    ///     `interlaced` frames: bottom first for 525-line (NTSC) sources, top first otherwise.
    public init(output: FrameOutput, format: ImageFormat, frameInterval: Fraction?, framesPerSecond: Double? = nil,
                standard: UInt64? = nil) throws(FrameDumpError) {
        self.output = output
        interlace = try Y4MSink.interlaceTag(field: format.field, standard: standard)
        converter = try Y4MConverter(format: format)
        rate = Y4MSink.rate(frameInterval: frameInterval, framesPerSecond: framesPerSecond)
        let tag = Array("FRAME\n".utf8)
        frameTag = UnsafeMutableRawBufferPointer.allocate(byteCount: tag.count, alignment: 1)
        frameTag.copyBytes(from: tag)
    }

    deinit {
        frameTag.deallocate()
        pendingHeader?.deallocate()
    }

    static func rate(frameInterval: Fraction?, framesPerSecond: Double?) -> (numerator: UInt32, denominator: UInt32) {
        if let interval = frameInterval, interval.numerator > 0, interval.denominator > 0 {
            let divisor = gcd(interval.numerator, interval.denominator)
            return (interval.denominator / divisor, interval.numerator / divisor)
        }
        // The rate asked for, as V4L2 would say it (29.97 is 30000:1001); nil out of range.
        if let fps = framesPerSecond, let interval = Fraction(framesPerSecond: fps) {
            let divisor = gcd(interval.numerator, interval.denominator)
            return (interval.denominator / divisor, interval.numerator / divisor)
        }
        return (30, 1)
    }

    /// y4m's `I` tag for a V4L2 field order. Frames that are not whole pictures (fields one
    /// per buffer, or one after the other in a buffer) have no y4m form: an error, rather than
    /// a stream that plays at half height or the wrong speed.
    static func interlaceTag(field: UInt32, standard: UInt64?) throws(FrameDumpError) -> String {
        switch FieldOrder(rawValue: field) {
        case .any?, .none?, .top?, .bottom?, nil: return "Ip"
        case .interlacedTopBottom?: return "It"
        case .interlacedBottomTop?: return "Ib"
        case .interlaced?:
            if let standard, standard & StandardID.lines525 != 0, standard & (StandardID.pal | StandardID.secam) == 0 { return "Ib" }
            return "It"
        case .alternate?, .sequentialTopBottom?, .sequentialBottomTop?:
            throw .usage("--container y4m: the driver delivers \(FieldOrder.name(field)) fields (not whole frames), which y4m cannot carry; ask for woven frames with --field interlaced")
        }
    }

    static func gcd(_ a: UInt32, _ b: UInt32) -> UInt32 {
        var (x, y) = (a, b)
        while y != 0 { (x, y) = (y, x % y) }
        return max(x, 1)
    }

    /// The stream header line, with its newline.
    public var header: String {
        "YUV4MPEG2 W\(converter.width) H\(converter.height) F\(rate.numerator):\(rate.denominator) \(interlace) A1:1 C\(converter.colorspaceTag)\n"
    }

    /// Prepares the stream header; call once before the first frame. The header goes out in
    /// the first frame's writev, after that frame converted, so a frame the driver lays out
    /// differently from its format (vivid's YU12 at 642x362: bytesused 348244, sizeimage 348606)
    /// fails with nothing written, never a header-only file.
    public func writeHeader() throws(FrameDumpError) {
        let bytes = Array(header.utf8)
        pendingHeader?.deallocate()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        buffer.copyBytes(from: bytes)
        pendingHeader = buffer
    }

    public func write(_ payload: borrowing FramePayload, index: Int) throws(FrameDumpError) {
        try converter.convert(planeCount: payload.planeCount) { payload.unsafePlaneBytes($0) }
        output.beginFrame()
        if let header = pendingHeader { output.append(UnsafeRawBufferPointer(header)) }
        output.append(UnsafeRawBufferPointer(frameTag))
        output.append(UnsafeRawBufferPointer(start: converter.buffer.baseAddress, count: converter.frameSize))
        try output.commitFrame()
        if let header = pendingHeader {
            header.deallocate()
            pendingHeader = nil
        }
    }

    public func finish() throws(FrameDumpError) {}
}
