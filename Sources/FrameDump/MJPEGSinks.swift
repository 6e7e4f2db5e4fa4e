import CFrameDump
import SystemPackage
import CV4L2
import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// How PNG pictures are compressed: chosen for speed, since encoding is most of a PNG frame's
/// cost. Measured with `framebridge-bench mjpeg` (1280x720; README, "Compressed capture"): zlib
/// level 1 with the "up" filter took 8.3 ms for colour bars and 48 ms for a noisy picture,
/// against 29 ms and 348 ms at libpng's default (level 6, adaptive filters), with noisy files a
/// little smaller (bars: 25 KB instead of 11 KB). Level 0 is faster still but stores the
/// picture uncompressed (2.7 MB a frame).
public enum PNGEncoding {
    /// zlib level (0-9).
    public static let compressionLevel: Int32 = 1
    /// PNG_FILTER_UP.
    public static let filters: Int32 = 0x20
}

/// The YUV4MPEG2 chroma tag of a JPEG subsampling, or nil when y4m has none for it.
func y4mTag(_ subsampling: JPEGSubsampling) -> String? {
    switch subsampling {
    case .s420: return "420jpeg" // JPEG puts 4:2:0 chroma between the luma samples (C420jpeg)
    case .s422: return "422"
    case .s444: return "444"
    case .gray: return "mono"
    case .s411: return "411"
    case .s440: return nil
    }
}

/// Writes a YUV4MPEG2 stream of MJPEG frames, each decoded by TurboJPEG to planar YUV at its
/// own subsampling. The header's chroma tag (`C420jpeg`, `C422`, ...) and size come from the
/// first frame decoded, so the header is written then. A frame that cannot be decoded (or is
/// delivered corrupt) is not written and is counted; a later frame whose subsampling or size
/// differs from the stream's is an error: a y4m stream cannot change layout, and converting it
/// silently would not be the camera's picture.
public final class MJPEGY4MSink: DecodingSink {
    public let output: FrameOutput
    public let rate: (numerator: UInt32, denominator: UInt32)
    private let decoder: JPEGDecoder
    private let buffer: UnsafeMutableRawBufferPointer
    private let frameTag: UnsafeMutableRawBufferPointer
    /// The stream's layout, from the first decoded frame.
    public private(set) var stream: JPEGHeader?
    public private(set) var framesNotDecoded = 0
    public private(set) var lastDecodeError: String?
    public private(set) var framesWritten = 0

    public static func check(_ format: ImageFormat) throws(FrameDumpError) {
        guard format.pixelFormat.isJPEG, format.planes.count == 1 else {
            throw .usage("--container y4m: pixel format \(format.pixelFormat) is not single-planar MJPEG/JPEG")
        }
    }

    public init(output: FrameOutput, format: ImageFormat, frameInterval: Fraction?, framesPerSecond: Double? = nil) throws(FrameDumpError) {
        try MJPEGY4MSink.check(format)
        self.output = output
        rate = Y4MSink.rate(frameInterval: frameInterval, framesPerSecond: framesPerSecond)
        do {
            decoder = try JPEGDecoder()
        } catch {
            throw .runtime("--container y4m: \(error.message)")
        }
        // Room for 4:4:4, the largest layout, at the format's size; a larger JPEG is refused.
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, Int(format.width) * Int(format.height) * 3), alignment: 64)
        let tag = Array("FRAME\n".utf8)
        frameTag = UnsafeMutableRawBufferPointer.allocate(byteCount: tag.count, alignment: 1)
        frameTag.copyBytes(from: tag)
    }

    deinit {
        buffer.deallocate()
        frameTag.deallocate()
    }

    /// The header for a stream of `header`'s layout.
    public func headerLine(_ header: JPEGHeader) -> String {
        // JFIF's YCbCr is full range; XCOLORRANGE=FULL says so (ffmpeg reads it as color_range pc).
        "YUV4MPEG2 W\(header.width) H\(header.height) F\(rate.numerator):\(rate.denominator) Ip A1:1 C\(y4mTag(header.subsampling) ?? "420jpeg") XCOLORRANGE=FULL\n"
    }

    private func writeHeader(_ header: JPEGHeader) throws(FrameDumpError) {
        let bytes = Array(headerLine(header).utf8)
        let result = bytes.withUnsafeBytes { buffer -> Result<Void, FrameDumpError> in
            do throws(FrameDumpError) {
                try output.writeHeader(buffer)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    public func write(_ payload: borrowing FramePayload, index: Int) throws(FrameDumpError) {
        if payload.info.isCorrupt {
            framesNotDecoded += 1
            lastDecodeError = "frame \(index) is corrupt (\(payload.info.defects.names.joined(separator: ", "))): not written to the y4m stream"
            return
        }
        let header: JPEGHeader
        do {
            header = try decoder.header(payload.unsafeCompressedBytes)
        } catch {
            framesNotDecoded += 1
            lastDecodeError = "frame \(index): \(error.message): not written to the y4m stream"
            return
        }
        if let stream, stream != header {
            throw .runtime("--container y4m: frame \(index) is a \(header.width)x\(header.height) \(header.subsampling) JPEG but the stream is \(stream.width)x\(stream.height) \(stream.subsampling) (C\(y4mTag(stream.subsampling) ?? "?")); a YUV4MPEG2 stream cannot change its layout. The \(framesWritten) frames written are kept; use --container raw or --jpeg-dir to keep such a stream")
        }
        guard y4mTag(header.subsampling) != nil else {
            throw .runtime("--container y4m: frame \(index) has \(header.subsampling) chroma, which YUV4MPEG2 cannot carry; use --container raw or --jpeg-dir")
        }
        let size = header.subsampling.planarSize(width: header.width, height: header.height)
        guard size <= buffer.count else {
            throw .runtime("--container y4m: frame \(index) is a \(header.width)x\(header.height) JPEG, larger than the format's; use --container raw or --jpeg-dir")
        }
        do {
            try decoder.decodeYUV(payload.unsafeCompressedBytes, into: buffer)
        } catch {
            framesNotDecoded += 1
            lastDecodeError = "frame \(index): \(error.message): not written to the y4m stream"
            return
        }
        if stream == nil {
            try writeHeader(header)
            stream = header
        }
        output.beginFrame()
        output.append(UnsafeRawBufferPointer(frameTag))
        output.append(UnsafeRawBufferPointer(start: buffer.baseAddress, count: size))
        try output.commitFrame()
        framesWritten += 1
    }

    /// With no frame decoded the file stays empty: the layout is unknown without one, and a
    /// guessed header would claim a stream that is not there. An empty file is no y4m stream,
    /// so that is an error, not a success with a count in the summary.
    public func finish() throws(FrameDumpError) {
        guard stream == nil, framesNotDecoded > 0 else { return }
        throw .runtime("--container y4m: none of the \(framesNotDecoded) frames could be decoded (last: \(lastDecodeError ?? "unknown")), so \(output.displayName) holds no y4m stream; --container raw or --jpeg-dir keeps the bytes the camera sent")
    }
}

/// Writes PNG pictures of every `every`-th MJPEG frame (`frame-000000.png`), decoded by
/// TurboJPEG to RGB (faster than libv4lconvert's MJPEG path; README, "MJPEG") and written
/// with libpng at ``PNGEncoding``'s level, each picture whole or not at all (a temporary name,
/// then rename). A frame that cannot be decoded, or that is delivered corrupt, gets no
/// picture and is counted.
public final class MJPEGPNGSink: DecodingSink {
    public let directory: String
    public let every: Int
    public private(set) var filesWritten = 0
    public private(set) var framesNotDecoded = 0
    public private(set) var lastDecodeError: String?
    private let decoder: JPEGDecoder
    private let rgb: UnsafeMutableRawBufferPointer
    private var errorText = [CChar](repeating: 0, count: 512)

    public init(directory: String, every: Int, format: ImageFormat) throws(FrameDumpError) {
        guard every >= 1 else { throw .usage("--every: must be at least 1, got \(every)") }
        guard format.pixelFormat.isJPEG else { throw .usage("--png-dir: \(format.pixelFormat) is not MJPEG/JPEG") }
        do {
            decoder = try JPEGDecoder()
        } catch {
            throw .runtime("--png-dir: \(error.message)")
        }
        self.directory = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        self.every = every
        rgb = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, Int(format.width) * Int(format.height) * 3), alignment: 64)
    }

    deinit {
        rgb.deallocate()
    }

    public func createDirectory() throws(FrameDumpError) {
        try OutputDirectory.create(directory, option: "--png-dir")
    }

    public func write(_ payload: borrowing FramePayload, index: Int) throws(FrameDumpError) {
        guard index % every == 0 else { return }
        if payload.info.isCorrupt {
            framesNotDecoded += 1
            lastDecodeError = "frame \(index) is corrupt (\(payload.info.defects.names.joined(separator: ", "))): no PNG written"
            return
        }
        let header: JPEGHeader
        do {
            header = try decoder.decodeRGB(payload.unsafeCompressedBytes, into: rgb)
        } catch {
            framesNotDecoded += 1
            lastDecodeError = "frame \(index): \(error.message): no PNG written"
            return
        }
        let name = PNGSink.fileName(index: index)
        let path = "\(directory)/\(name)"
        let temporary = "\(directory)/.\(name).tmp"
        let result = errorText.withUnsafeMutableBufferPointer { text in
            cframedump_write_png_rgb24_level(temporary, rgb.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt32(header.width),
                                        UInt32(header.height), header.width * 3, PNGEncoding.compressionLevel,
                                        PNGEncoding.filters, text.baseAddress, text.count)
        }
        if result != 0 {
            unlink(temporary)
            let message = errorText.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw .runtime("--png-dir: \(path): \(message)")
        }
        if rename(temporary, path) != 0 {
            let errno = Errno.current
            unlink(temporary)
            throw .runtime("--png-dir: rename \(temporary) -> \(path) failed: \(errno)")
        }
        filesWritten += 1
    }

    public func finish() throws(FrameDumpError) {}
}
