import CTurboJPEG
import V4L2

/// The chroma subsampling of a JPEG picture (TurboJPEG's `TJSAMP_*`).
public enum JPEGSubsampling: Int32, Hashable, Sendable, Codable, CustomStringConvertible {
    case s444 = 0
    case s422 = 1
    case s420 = 2
    case gray = 3
    case s440 = 4
    case s411 = 5

    public var description: String {
        switch self {
        case .s444: return "4:4:4"
        case .s422: return "4:2:2"
        case .s420: return "4:2:0"
        case .gray: return "grey"
        case .s440: return "4:4:0"
        case .s411: return "4:1:1"
        }
    }

    /// Chroma plane size for a `width` x `height` picture (tjPlaneWidth/Height); 0 for grey.
    public func chromaSize(width: Int, height: Int) -> (width: Int, height: Int) {
        guard self != .gray else { return (0, 0) }
        return (Int(tjPlaneWidth(1, Int32(width), rawValue)), Int(tjPlaneHeight(1, Int32(height), rawValue)))
    }

    /// Bytes of a planar picture (Y, then U and V, rows packed with no padding).
    public func planarSize(width: Int, height: Int) -> Int {
        let chroma = chromaSize(width: width, height: height)
        return width * height + 2 * chroma.width * chroma.height
    }
}

/// What a JPEG header says: size and subsampling.
public struct JPEGHeader: Hashable, Sendable {
    public var width: Int
    public var height: Int
    public var subsampling: JPEGSubsampling
}

/// Why a JPEG could not be decoded.
public struct JPEGDecodeError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Decodes JPEG frames (MJPEG) with libjpeg-turbo's TurboJPEG API into a caller's buffer.
///
/// One decompressor handle (`tjhandle`) is made when the decoder is and reused for every frame,
/// so decoding allocates nothing on the Swift side per frame. A warning from libjpeg (corrupt
/// data, a premature end) fails the decode (`TJFLAG_STOPONWARNING`): a damaged frame gives an
/// error, never a partly grey picture. Not thread-safe: one decoder per thread.
public final class JPEGDecoder {
    private let handle: tjhandle

    public init() throws(JPEGDecodeError) {
        guard let handle = tjInitDecompress() else {
            throw JPEGDecodeError(message: "tjInitDecompress failed: \(String(cString: tjGetErrorStr2(nil)))")
        }
        self.handle = handle
    }

    deinit {
        tjDestroy(handle)
    }

    private func failure(_ what: String) -> JPEGDecodeError {
        JPEGDecodeError(message: "\(what): \(String(cString: tjGetErrorStr2(handle)))")
    }

    /// Reads the header of `jpeg` (size and subsampling) without decoding it.
    public func header(_ jpeg: UnsafeRawBufferPointer) throws(JPEGDecodeError) -> JPEGHeader {
        guard let base = jpeg.baseAddress, jpeg.count > 0 else { throw JPEGDecodeError(message: "the JPEG is empty") }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        if tjDecompressHeader3(handle, base.assumingMemoryBound(to: UInt8.self), UInt(jpeg.count),
                               &width, &height, &subsampling, &colorspace) != 0 {
            throw failure("JPEG header")
        }
        guard width > 0, height > 0, let kind = JPEGSubsampling(rawValue: subsampling) else {
            throw JPEGDecodeError(message: "JPEG header: unsupported subsampling \(subsampling) or size \(width)x\(height)")
        }
        return JPEGHeader(width: Int(width), height: Int(height), subsampling: kind)
    }

    /// Decodes `jpeg` to planar YUV at its own subsampling (Y, then U, then V; rows packed, the
    /// layout of YUV4MPEG2 and I420/I422) into `destination`, which must hold
    /// ``JPEGSubsampling/planarSize(width:height:)`` bytes.
    @discardableResult
    public func decodeYUV(_ jpeg: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) throws(JPEGDecodeError) -> JPEGHeader {
        let header = try header(jpeg)
        let size = header.subsampling.planarSize(width: header.width, height: header.height)
        guard destination.count >= size, let out = destination.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            throw JPEGDecodeError(message: "a \(header.width)x\(header.height) \(header.subsampling) picture needs \(size) bytes, the buffer has \(destination.count)")
        }
        let chroma = header.subsampling.chromaSize(width: header.width, height: header.height)
        let lumaBytes = header.width * header.height
        var planes: (UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt8>?) =
            (out, out + lumaBytes, out + lumaBytes + chroma.width * chroma.height)
        var strides: (Int32, Int32, Int32) = (Int32(header.width), Int32(chroma.width), Int32(chroma.width))
        let result = withUnsafeMutablePointer(to: &planes) { planes in
            withUnsafeMutablePointer(to: &strides) { strides in
                planes.withMemoryRebound(to: UnsafeMutablePointer<UInt8>?.self, capacity: 3) { planes in
                    strides.withMemoryRebound(to: Int32.self, capacity: 3) { strides in
                        tjDecompressToYUVPlanes(handle, jpeg.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt(jpeg.count),
                                                planes, Int32(header.width), strides, Int32(header.height), TJFLAG_STOPONWARNING)
                    }
                }
            }
        }
        if result != 0 { throw failure("JPEG decode") }
        return header
    }

    /// Decodes `jpeg` to packed RGB (3 bytes per pixel, rows `width * 3` bytes) into
    /// `destination`, which must hold `width * height * 3` bytes.
    @discardableResult
    public func decodeRGB(_ jpeg: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) throws(JPEGDecodeError) -> JPEGHeader {
        let header = try header(jpeg)
        let size = header.width * header.height * 3
        guard destination.count >= size, let out = destination.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            throw JPEGDecodeError(message: "a \(header.width)x\(header.height) picture needs \(size) bytes of RGB, the buffer has \(destination.count)")
        }
        if tjDecompress2(handle, jpeg.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt(jpeg.count), out,
                         Int32(header.width), Int32(header.width * 3), Int32(header.height), Int32(TJPF_RGB.rawValue),
                         TJFLAG_STOPONWARNING | TJFLAG_ACCURATEDCT) != 0 {
            throw failure("JPEG decode")
        }
        return header
    }

    /// Decodes a locked MJPEG/JPEG frame's payload to planar YUV (see ``decodeYUV(_:into:)``).
    /// A frame flagged corrupt is refused: its picture would be wrong.
    @discardableResult
    public func decodeYUV(_ payload: borrowing FramePayload, into destination: UnsafeMutableRawBufferPointer) throws(JPEGDecodeError) -> JPEGHeader {
        if payload.info.isCorrupt {
            throw JPEGDecodeError(message: "the frame is corrupt (\(payload.info.defects.names.joined(separator: ", ")))")
        }
        return try decodeYUV(payload.unsafeCompressedBytes, into: destination)
    }
}
