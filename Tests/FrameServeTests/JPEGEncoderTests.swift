import CTurboJPEG
@testable import FrameServe
import NIOCore
import V4L2
import XCTest

/// The server's encoder, format by format: a smooth test picture laid out as the driver would
/// (strides wider than the picture), encoded, decoded again by libjpeg-turbo, and compared with
/// the picture within JPEG's loss.
final class JPEGEncoderTests: XCTestCase {
    static let width = 96, height = 64

    /// The test picture: luma and chroma gradients.
    static func y(_ x: Int, _ y: Int) -> UInt8 { UInt8(16 + (x * 200 / width + y) % 220) }
    static func u(_ x: Int, _ y: Int) -> UInt8 { UInt8(64 + (x * 120 / width)) }
    static func v(_ x: Int, _ y: Int) -> UInt8 { UInt8(64 + (y * 120 / height)) }

    /// Decodes `jpeg` to planar Y'CbCr; the luma plane and the first chroma plane, with the
    /// chroma plane's width and height.
    func decode(_ jpeg: ByteBuffer) throws -> (luma: [UInt8], cb: [UInt8], chromaWidth: Int, chromaHeight: Int) {
        let bytes = Array(jpeg.readableBytesView)
        let handle = try XCTUnwrap(tjInitDecompress())
        defer { tjDestroy(handle) }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        XCTAssertEqual(tjDecompressHeader3(handle, bytes, UInt(bytes.count), &width, &height, &subsampling, &colorspace), 0)
        XCTAssertEqual([Int(width), Int(height)], [Self.width, Self.height])
        let size = Int(tjBufSizeYUV2(width, 1, height, subsampling))
        var out = [UInt8](repeating: 0, count: size)
        XCTAssertEqual(tjDecompressToYUV2(handle, bytes, UInt(bytes.count), &out, width, 1, height, 0), 0)
        let lumaSize = Self.width * Self.height
        if subsampling == Int32(TJSAMP_GRAY.rawValue) { return (Array(out[0..<lumaSize]), [], 0, 0) }
        let chromaWidth = Int(tjPlaneWidth(1, width, subsampling)), chromaHeight = Int(tjPlaneHeight(1, height, subsampling))
        return (Array(out[0..<lumaSize]), Array(out[lumaSize..<(lumaSize + chromaWidth * chromaHeight)]), chromaWidth, chromaHeight)
    }

    /// Mean and largest absolute difference of the decoded planes from the picture.
    /// `full`: the driver says full range (quantization 1); otherwise the samples are limited
    /// range and the JPEG holds them stretched to full range.
    func check(_ format: FourCC, planes: [[UInt8]], stride: Int, chroma: Bool = true, full: Bool = false,
               file: StaticString = #filePath, line: UInt = #line) throws {
        let encoder = try JPEGEncoder(quality: 90)
        var image = ImageFormat(bufferType: .videoCapture, width: UInt32(Self.width), height: UInt32(Self.height), pixelFormat: format,
                                quantization: full ? 1 : 2)
        let luma: (UInt8) -> Int = { full ? Int($0) : Int(JPEGEncoder.stretch(Int($0), from: 16, span: 219, center: 0)) }
        let cb: (UInt8) -> Int = { full ? Int($0) : Int(JPEGEncoder.stretch(Int($0), from: 16, span: 224, center: 128)) }
        image.planes = [PlaneFormat(bytesPerLine: UInt32(stride), sizeImage: UInt32(planes[0].count))]
        var copies = planes
        let jpeg = try copies.withUnsafeMutableBufferPointers { try encoder.encode(planes: $0, format: image) }
        let decoded = try decode(jpeg)
        var total = 0, worst = 0
        for row in 0..<Self.height {
            for x in 0..<Self.width {
                let d = abs(Int(decoded.luma[row * Self.width + x]) - luma(Self.y(x, row)))
                total += d
                worst = max(worst, d)
            }
        }
        let mean = Double(total) / Double(Self.width * Self.height)
        XCTAssertLessThan(mean, 2.5, "\(format): luma mean error", file: file, line: line)
        XCTAssertLessThan(worst, 24, "\(format): luma largest error", file: file, line: line)
        guard chroma else { return }
        var chromaTotal = 0
        let xScale = Self.width / decoded.chromaWidth, yScale = Self.height / decoded.chromaHeight
        for row in 0..<decoded.chromaHeight {
            for x in 0..<decoded.chromaWidth {
                chromaTotal += abs(Int(decoded.cb[row * decoded.chromaWidth + x]) - cb(Self.u(x * xScale, row * yScale)))
            }
        }
        XCTAssertLessThan(Double(chromaTotal) / Double(decoded.chromaWidth * decoded.chromaHeight), 3.0, "\(format): Cb mean error", file: file, line: line)
    }

    func testPackedFourTwoTwoFormatsKeepTheirPicture() throws {
        let stride = Self.width * 2 + 32
        for (format, order) in [(FourCC.yuyv, "YUYV"), (.uyvy, "UYVY"), (FourCC("YVYU")!, "YVYU"), (FourCC("VYUY")!, "VYUY")] {
            var bytes = [UInt8](repeating: 0, count: stride * Self.height)
            for row in 0..<Self.height {
                for pair in 0..<(Self.width / 2) {
                    let x = pair * 2
                    let values: [Character: [UInt8]] = ["Y": [Self.y(x, row), Self.y(x + 1, row)], "U": [Self.u(x, row)], "V": [Self.v(x, row)]]
                    var seenY = 0
                    for (i, c) in order.enumerated() {
                        let value: UInt8
                        if c == "Y" { value = values["Y"]![seenY]; seenY += 1 } else { value = values[c]![0] }
                        bytes[row * stride + pair * 4 + i] = value
                    }
                }
            }
            try check(format, planes: [bytes], stride: stride)
            try check(format, planes: [bytes], stride: stride, full: true)
        }
    }

    func testPlanarAndSemiPlanarFormatsKeepTheirPicture() throws {
        let stride = Self.width + 16
        var luma = [UInt8](repeating: 0, count: stride * Self.height)
        for row in 0..<Self.height { for x in 0..<Self.width { luma[row * stride + x] = Self.y(x, row) } }
        // NV12: interleaved CbCr at half resolution both ways, after the luma, same stride.
        var nv12 = luma
        for row in 0..<(Self.height / 2) {
            var line = [UInt8](repeating: 0, count: stride)
            for x in 0..<(Self.width / 2) {
                line[x * 2] = Self.u(x * 2, row * 2)
                line[x * 2 + 1] = Self.v(x * 2, row * 2)
            }
            nv12 += line
        }
        try check(.nv12, planes: [nv12], stride: stride)
        // YU12: Y, then Cb and Cr planes with half the stride.
        var yu12 = luma
        for plane in 0..<2 {
            for row in 0..<(Self.height / 2) {
                var line = [UInt8](repeating: 0, count: stride / 2)
                for x in 0..<(Self.width / 2) { line[x] = plane == 0 ? Self.u(x * 2, row * 2) : Self.v(x * 2, row * 2) }
                yu12 += line
            }
        }
        try check(.yuv420, planes: [yu12], stride: stride)
        try check(.yuv420, planes: [yu12], stride: stride, full: true)
        try check(.grey, planes: [luma], stride: stride, chroma: false)
        try check(.grey, planes: [luma], stride: stride, chroma: false, full: true)
    }

    func testAFrameTooShortForItsSizeIsAnErrorNotARead() throws {
        let encoder = try JPEGEncoder(quality: 80)
        var image = ImageFormat(bufferType: .videoCapture, width: UInt32(Self.width), height: UInt32(Self.height), pixelFormat: .yuyv)
        image.planes = [PlaneFormat(bytesPerLine: UInt32(Self.width * 2), sizeImage: 100)]
        var short = [[UInt8](repeating: 0, count: 100)]
        XCTAssertThrowsError(try short.withUnsafeMutableBufferPointers { try encoder.encode(planes: $0, format: image) })
    }
}

private extension Array where Element == [UInt8] {
    /// Runs `body` with a raw view of each array.
    mutating func withUnsafeMutableBufferPointers<R>(_ body: ([UnsafeRawBufferPointer]) throws -> R) throws -> R {
        var pointers: [UnsafeRawBufferPointer] = []
        func nest(_ index: Int) throws -> R {
            if index == count { return try body(pointers) }
            return try self[index].withUnsafeBytes { raw in
                pointers.append(raw)
                return try nest(index + 1)
            }
        }
        return try nest(0)
    }
}
