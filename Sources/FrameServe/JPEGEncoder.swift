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
        switch fourcc {
        case .grey:
            let bytes = planes[0]
            let pitch = stride0 > 0 ? stride0 : width
            try require(bytes.count >= pitch * (height - 1) + width, fourcc, bytes.count)
            return try compressGray(bytes.baseAddress!, width: width, pitch: pitch, height: height)
        case .yuyv, .uyvy, FourCC("YVYU")!, FourCC("VYUY")!:
            let bytes = planes[0]
            let pitch = stride0 > 0 ? stride0 : width * 2
            try require(bytes.count >= pitch * (height - 1) + width * 2, fourcc, bytes.count)
            // Byte positions of Y0, U, V in each 4-byte group.
            let (y, u, v): (Int, Int, Int)
            switch fourcc {
            case .uyvy: (y, u, v) = (1, 0, 2)
            case FourCC("YVYU")!: (y, u, v) = (0, 3, 1)
            case FourCC("VYUY")!: (y, u, v) = (1, 2, 0)
            default: (y, u, v) = (0, 1, 3)
            }
            return try splitPacked422(bytes.baseAddress!, pitch: pitch, width: width, height: height, y: y, u: u, v: v)
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
            try require(chroma.count >= chromaPitch * (chromaHeight - 1) + (width + 1) / 2 * 2, fourcc, chroma.count)
            return try splitSemiPlanar420(luma: luma.baseAddress!, pitch: pitch, chroma: chroma.baseAddress!, chromaPitch: chromaPitch,
                                          width: width, height: height, swapped: fourcc == FourCC("NV21")!)
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
                    yuv.append(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            } else {
                let bytes = planes[0]
                try require(bytes.count >= pitch * height + 2 * chromaPitch * chromaHeight, fourcc, bytes.count)
                let base = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
                yuv = [base, base + pitch * height, base + pitch * height + chromaPitch * chromaHeight]
            }
            if fourcc == FourCC("YV12")! { yuv.swapAt(1, 2) }
            return try compressPlanes(yuv, strides: [pitch, chromaPitch, chromaPitch], width: width, height: height,
                                      subsampling: fourcc == .yuv422p ? TJSAMP_422 : TJSAMP_420)
        default:
            throw ServeError.usage("pixel format \(fourcc) cannot be encoded to JPEG; use one of \(Self.formats.map(\.description).joined(separator: ", ")) or MJPG (passed through)")
        }
    }

    private func require(_ condition: Bool, _ format: FourCC, _ count: Int) throws(ServeError) {
        if !condition { throw ServeError.runtime("a \(format) frame of \(count) bytes is too short for its size") }
    }

    // MARK: - Splitting into planes

    private func splitPacked422(_ base: UnsafeRawPointer, pitch: Int, width: Int, height: Int, y: Int, u: Int, v: Int) throws(ServeError) -> ByteBuffer {
        let chromaWidth = (width + 1) / 2
        let lumaSize = width * height, chromaSize = chromaWidth * height
        if scratch.count < lumaSize + 2 * chromaSize { scratch = [UInt8](repeating: 0, count: lumaSize + 2 * chromaSize) }
        return try scratch.withUnsafeMutableBufferPointer { buffer throws(ServeError) -> ByteBuffer in
            let out = buffer.baseAddress!
            let src = base.assumingMemoryBound(to: UInt8.self)
            for row in 0..<height {
                let line = src + row * pitch
                let yLine = out + row * width
                let uLine = out + lumaSize + row * chromaWidth
                let vLine = out + lumaSize + chromaSize + row * chromaWidth
                for pair in 0..<(width / 2) {
                    let group = line + pair * 4
                    yLine[pair * 2] = group[y]
                    yLine[pair * 2 + 1] = group[y + 2]
                    uLine[pair] = group[u]
                    vLine[pair] = group[v]
                }
                if width & 1 == 1 {
                    let group = line + (width / 2) * 4
                    yLine[width - 1] = group[y]
                    uLine[chromaWidth - 1] = group[u]
                    vLine[chromaWidth - 1] = group[v]
                }
            }
            return try compressPlanes([UnsafePointer(out), UnsafePointer(out + lumaSize), UnsafePointer(out + lumaSize + chromaSize)],
                                      strides: [width, chromaWidth, chromaWidth], width: width, height: height, subsampling: TJSAMP_422)
        }
    }

    private func splitSemiPlanar420(luma: UnsafeRawPointer, pitch: Int, chroma: UnsafeRawPointer, chromaPitch: Int,
                                    width: Int, height: Int, swapped: Bool) throws(ServeError) -> ByteBuffer {
        let chromaWidth = (width + 1) / 2, chromaHeight = (height + 1) / 2
        let chromaSize = chromaWidth * chromaHeight
        if scratch.count < 2 * chromaSize { scratch = [UInt8](repeating: 0, count: 2 * chromaSize) }
        return try scratch.withUnsafeMutableBufferPointer { buffer throws(ServeError) -> ByteBuffer in
            let out = buffer.baseAddress!
            let src = chroma.assumingMemoryBound(to: UInt8.self)
            let (first, second) = swapped ? (out + chromaSize, out) : (out, out + chromaSize)
            for row in 0..<chromaHeight {
                let line = src + row * chromaPitch
                for x in 0..<chromaWidth {
                    first[row * chromaWidth + x] = line[x * 2]
                    second[row * chromaWidth + x] = line[x * 2 + 1]
                }
            }
            return try compressPlanes([luma.assumingMemoryBound(to: UInt8.self), UnsafePointer(out), UnsafePointer(out + chromaSize)],
                                      strides: [pitch, chromaWidth, chromaWidth], width: width, height: height, subsampling: TJSAMP_420)
        }
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
