import CTurboJPEG
import FrameBridge
import NIOCore
import V4L2

/// Encodes captured frames to JPEG with libjpeg-turbo, straight from the mapped buffer: planar
/// YUV (YU12, YV12, 422P) is handed to TurboJPEG as its planes with the driver's strides; packed
/// 4:2:2 (YUYV, UYVY, YVYU, VYUY) and semi-planar 4:2:0 (NV12, NV21) are split into planes by
/// one pass over the bytes, with no RGB step; GREY is encoded as luma alone. An MJPEG source
/// is not encoded at all: the server passes its frames through.
///
/// One encoder per capture thread; its scratch planes and output buffer are reused from frame
/// to frame, so a frame of an unchanged size allocates nothing but the JPEG handed out.
final class JPEGEncoder {
    /// The pixel formats it encodes, for messages.
    static let formats: [FourCC] = [.yuyv, .uyvy, FourCC("YVYU")!, FourCC("VYUY")!, .nv12, FourCC("NV21")!,
                                    .yuv420, FourCC("YV12")!, .yuv422p, .grey]

    static func canEncode(_ format: FourCC) -> Bool { formats.contains(format) }

    let quality: Int32
    private let handle: tjhandle
    private var scratch: [UInt8] = []
    private var output: UnsafeMutablePointer<UInt8>?
    private var outputCapacity = 0
    private let allocator = ByteBufferAllocator()

    init(quality: Int) throws(ServeError) {
        guard let handle = tjInitCompress() else { throw ServeError.runtime("libjpeg-turbo: tjInitCompress failed") }
        self.handle = handle
        self.quality = Int32(quality)
    }

    deinit {
        tjDestroy(handle)
        if let output { tjFree(output) }
    }

    /// The JPEG of `payload`'s picture, `width` x `height` in `format`, whose plane `i` has
    /// `strides[i]` bytes per line.
    func encode(_ payload: borrowing FramePayload, format: ImageFormat) throws(ServeError) -> ByteBuffer {
        var planes: [UnsafeRawBufferPointer] = []
        planes.reserveCapacity(payload.planeCount)
        for plane in 0..<payload.planeCount { planes.append(payload.unsafePlaneBytes(plane)) }
        return try encode(planes: planes, format: format)
    }

    /// The JPEG of a picture whose payload planes are `planes` (each from its data offset).
    func encode(planes: [UnsafeRawBufferPointer], format: ImageFormat) throws(ServeError) -> ByteBuffer {
        let width = Int(format.width), height = Int(format.height)
        guard width > 0, height > 0 else { throw ServeError.runtime("a \(width)x\(height) frame has no picture") }
        let stride0 = format.planes.first.map { Int($0.bytesPerLine) } ?? 0
        let fourcc = format.pixelFormat
        // JPEG (JFIF) samples are full range; a driver's Y'CbCr is limited range (16-235, 16-240)
        // unless it says otherwise. Limited samples are stretched on the way, or a viewer sees grey
        // blacks and dull colours.
        let full = format.quantization == 1 || (format.quantization == 0 && format.colorspace == 7 /* V4L2_COLORSPACE_JPEG */)
        let chromaWidth = (width + 1) / 2
        func base(_ plane: UnsafeRawBufferPointer, _ offset: Int = 0) -> UnsafePointer<UInt8> {
            plane.baseAddress!.assumingMemoryBound(to: UInt8.self) + offset
        }
        switch fourcc {
        case .grey:
            let pitch = stride0 > 0 ? stride0 : width
            try require(planes[0].count >= pitch * (height - 1) + width, fourcc, planes[0].count)
            if full { return try compressGray(base(planes[0]), width: width, pitch: pitch, height: height) }
            return try withScratch(width * height) { out throws(ServeError) -> ByteBuffer in
                Self.gather(PlaneSource(base: base(planes[0]), pitch: pitch, step: 1), into: out, width: width, height: height, lut: Self.expandLuma)
                return try compressGray(UnsafePointer(out), width: width, pitch: width, height: height)
            }
        case .yuyv, .uyvy, FourCC("YVYU")!, FourCC("VYUY")!:
            let pitch = stride0 > 0 ? stride0 : width * 2
            try require(pitch >= chromaWidth * 4 && planes[0].count >= pitch * (height - 1) + chromaWidth * 4, fourcc, planes[0].count)
            // Byte positions of Y0, U, V in each 4-byte group.
            let (y, u, v): (Int, Int, Int)
            switch fourcc {
            case .uyvy: (y, u, v) = (1, 0, 2)
            case FourCC("YVYU")!: (y, u, v) = (0, 3, 1)
            case FourCC("VYUY")!: (y, u, v) = (1, 2, 0)
            default: (y, u, v) = (0, 1, 3)
            }
            let packed = base(planes[0])
            return try compressGathered([PlaneSource(base: packed + y, pitch: pitch, step: 2),
                                         PlaneSource(base: packed + u, pitch: pitch, step: 4),
                                         PlaneSource(base: packed + v, pitch: pitch, step: 4)],
                                        width: width, height: height, chromaHeight: height, subsampling: TJSAMP_422, full: full)
        case .nv12, FourCC("NV21")!, .nv12m:
            let luma = planes[0]
            let pitch = stride0 > 0 ? stride0 : width
            let chromaHeight = (height + 1) / 2
            let chroma: UnsafeRawBufferPointer
            let chromaPitch: Int
            if planes.count >= 2 {
                chroma = planes[1]
                chromaPitch = format.planes.count > 1 ? Int(format.planes[1].bytesPerLine) : pitch
            } else {
                try require(luma.count >= pitch * height, fourcc, luma.count)
                chroma = UnsafeRawBufferPointer(rebasing: luma[(pitch * height)...])
                chromaPitch = pitch
            }
            try require(luma.count >= pitch * (height - 1) + width, fourcc, luma.count)
            try require(chroma.count >= chromaPitch * (chromaHeight - 1) + chromaWidth * 2, fourcc, chroma.count)
            let swapped = fourcc == FourCC("NV21")!
            return try compressGathered([PlaneSource(base: base(luma), pitch: pitch, step: 1),
                                         PlaneSource(base: base(chroma, swapped ? 1 : 0), pitch: chromaPitch, step: 2),
                                         PlaneSource(base: base(chroma, swapped ? 0 : 1), pitch: chromaPitch, step: 2)],
                                        width: width, height: height, chromaHeight: chromaHeight, subsampling: TJSAMP_420, full: full)
        case .yuv420, FourCC("YV12")!, .yuv422p, .yuv420m:
            let vertical = fourcc == .yuv422p ? 1 : 2
            let pitch = stride0 > 0 ? stride0 : width
            let chromaPitch = pitch / 2
            let chromaHeight = (height + vertical - 1) / vertical
            var yuv: [UnsafePointer<UInt8>] = []
            if planes.count >= 3 {
                for i in 0..<3 {
                    let bytes = planes[i]
                    try require(bytes.count >= (i == 0 ? pitch * height : chromaPitch * chromaHeight), fourcc, bytes.count)
                    yuv.append(base(bytes))
                }
            } else {
                let bytes = planes[0]
                try require(bytes.count >= pitch * height + 2 * chromaPitch * chromaHeight, fourcc, bytes.count)
                yuv = [base(bytes), base(bytes, pitch * height), base(bytes, pitch * height + chromaPitch * chromaHeight)]
            }
            if fourcc == FourCC("YV12")! { yuv.swapAt(1, 2) }
            let subsampling = fourcc == .yuv422p ? TJSAMP_422 : TJSAMP_420
            if full {
                // Straight from the mapped buffer: TurboJPEG reads the planes with the driver's strides.
                return try compressPlanes(yuv, strides: [pitch, chromaPitch, chromaPitch], width: width, height: height, subsampling: subsampling)
            }
            return try compressGathered([PlaneSource(base: yuv[0], pitch: pitch, step: 1), PlaneSource(base: yuv[1], pitch: chromaPitch, step: 1),
                                         PlaneSource(base: yuv[2], pitch: chromaPitch, step: 1)],
                                        width: width, height: height, chromaHeight: chromaHeight, subsampling: subsampling, full: false)
        default:
            throw ServeError.usage("pixel format \(fourcc) cannot be encoded to JPEG; use one of \(Self.formats.map(\.description).joined(separator: ", ")) or MJPG (passed through)")
        }
    }

    private func require(_ condition: Bool, _ format: FourCC, _ count: Int) throws(ServeError) {
        if !condition { throw ServeError.runtime("a \(format) frame of \(count) bytes is too short for its size") }
    }

    // MARK: - Gathering into planes

    /// One component in the frame: its first sample, bytes per line, bytes between samples.
    struct PlaneSource {
        var base: UnsafePointer<UInt8>
        var pitch: Int
        var step: Int
    }

    /// Limited range to full: Y' 16...235 -> 0...255, Cb and Cr 16...240 -> 0...255 about 128.
    static let expandLuma: [UInt8] = (0..<256).map { (value: Int) -> UInt8 in stretch(value, from: 16, span: 219, center: 0) }
    static let expandChroma: [UInt8] = (0..<256).map { (value: Int) -> UInt8 in stretch(value, from: 16, span: 224, center: 128) }

    /// `value` from a range of `span` starting at `from` to 0...255, rounded and clamped.
    static func stretch(_ value: Int, from: Int, span: Int, center: Int) -> UInt8 {
        let scaled: Double
        if center == 0 {
            scaled = Double(value - from) * 255.0 / Double(span)
        } else {
            scaled = Double(center) + Double(value - center) * 255.0 / Double(span)
        }
        return UInt8(max(0.0, min(255.0, scaled.rounded())))
    }
    static let identity: [UInt8] = (0..<256).map { UInt8($0) }

    /// Copies one component, `width` x `height` samples, into `out` (stride `width`) through `lut`.
    static func gather(_ source: PlaneSource, into out: UnsafeMutablePointer<UInt8>, width: Int, height: Int, lut: [UInt8]) {
        lut.withUnsafeBufferPointer { table in
            let map = table.baseAddress!
            for row in 0..<height {
                let line = source.base + row * source.pitch
                let target = out + row * width
                if source.step == 1 {
                    for x in 0..<width { target[x] = map[Int(line[x])] }
                } else {
                    for x in 0..<width { target[x] = map[Int(line[x * source.step])] }
                }
            }
        }
    }

    /// Y', Cb and Cr gathered into planar scratch (stretched to full range unless `full`) and encoded.
    private func compressGathered(_ sources: [PlaneSource], width: Int, height: Int, chromaHeight: Int,
                                  subsampling: TJSAMP, full: Bool) throws(ServeError) -> ByteBuffer {
        let chromaWidth = (width + 1) / 2
        let lumaSize = width * height, chromaSize = chromaWidth * chromaHeight
        return try withScratch(lumaSize + 2 * chromaSize) { out throws(ServeError) -> ByteBuffer in
            Self.gather(sources[0], into: out, width: width, height: height, lut: full ? Self.identity : Self.expandLuma)
            Self.gather(sources[1], into: out + lumaSize, width: chromaWidth, height: chromaHeight, lut: full ? Self.identity : Self.expandChroma)
            Self.gather(sources[2], into: out + lumaSize + chromaSize, width: chromaWidth, height: chromaHeight, lut: full ? Self.identity : Self.expandChroma)
            return try compressPlanes([UnsafePointer(out), UnsafePointer(out + lumaSize), UnsafePointer(out + lumaSize + chromaSize)],
                                      strides: [width, chromaWidth, chromaWidth], width: width, height: height, subsampling: subsampling)
        }
    }

    private func withScratch(_ count: Int, _ body: (UnsafeMutablePointer<UInt8>) throws(ServeError) -> ByteBuffer) throws(ServeError) -> ByteBuffer {
        if scratch.count < count { scratch = [UInt8](repeating: 0, count: count) }
        return try scratch.withUnsafeMutableBufferPointer { buffer throws(ServeError) -> ByteBuffer in try body(buffer.baseAddress!) }
    }

    // MARK: - TurboJPEG

    /// Room for the largest JPEG of the size (TJFLAG_NOREALLOC: TurboJPEG never allocates).
    private func reserveOutput(width: Int, height: Int, subsampling: TJSAMP) {
        let needed = Int(tjBufSize(Int32(width), Int32(height), Int32(subsampling.rawValue)))
        if needed > outputCapacity {
            if let output { tjFree(output) }
            output = tjAlloc(Int32(needed))
            outputCapacity = output == nil ? 0 : needed
        }
    }

    private func compressPlanes(_ planes: [UnsafePointer<UInt8>], strides: [Int], width: Int, height: Int,
                                subsampling: TJSAMP) throws(ServeError) -> ByteBuffer {
        reserveOutput(width: width, height: height, subsampling: subsampling)
        guard output != nil else { throw ServeError.runtime("libjpeg-turbo: no memory for a \(width)x\(height) JPEG") }
        var buffer: UnsafeMutablePointer<UInt8>? = output
        var size = UInt(outputCapacity)
        var sources: [UnsafePointer<UInt8>?] = planes
        var pitches = strides.map { Int32($0) }
        let result = tjCompressFromYUVPlanes(handle, &sources, Int32(width), &pitches, Int32(height), Int32(subsampling.rawValue),
                                             &buffer, &size, quality, TJFLAG_NOREALLOC | TJFLAG_FASTDCT)
        return try finish(result, buffer: buffer!, size: size)
    }

    private func compressGray(_ base: UnsafeRawPointer, width: Int, pitch: Int, height: Int) throws(ServeError) -> ByteBuffer {
        reserveOutput(width: width, height: height, subsampling: TJSAMP_GRAY)
        guard output != nil else { throw ServeError.runtime("libjpeg-turbo: no memory for a \(width)x\(height) JPEG") }
        var buffer: UnsafeMutablePointer<UInt8>? = output
        var size = UInt(outputCapacity)
        let result = tjCompress2(handle, base.assumingMemoryBound(to: UInt8.self), Int32(width), Int32(pitch), Int32(height),
                                 Int32(TJPF_GRAY.rawValue), &buffer, &size, Int32(TJSAMP_GRAY.rawValue), quality,
                                 TJFLAG_NOREALLOC | TJFLAG_FASTDCT)
        return try finish(result, buffer: buffer!, size: size)
    }

    private func finish(_ result: Int32, buffer: UnsafeMutablePointer<UInt8>, size: UInt) throws(ServeError) -> ByteBuffer {
        guard result == 0 else {
            throw ServeError.runtime("libjpeg-turbo: \(String(cString: tjGetErrorStr2(handle)))")
        }
        // The one copy: from TurboJPEG's reused output into the buffer every viewer sends from.
        var jpeg = allocator.buffer(capacity: Int(size))
        jpeg.writeBytes(UnsafeRawBufferPointer(start: buffer, count: Int(size)))
        return jpeg
    }
}

/// What `framedump serve` throws: a usage error (exit 2) or a runtime error (exit 1).
public enum ServeError: Error, CustomStringConvertible, Sendable {
    case usage(String)
    case runtime(String)

    public var description: String {
        switch self {
        case .usage(let message), .runtime(let message): return message
        }
    }
}
