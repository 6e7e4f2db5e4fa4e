@testable import FrameDump
import V4L2
import XCTest

final class Y4MConverterTests: XCTestCase {
    private func convert(_ format: ImageFormat, planes: [[UInt8]]) throws -> [UInt8] {
        let converter = try Y4MConverter(format: format)
        var buffers = planes
        let pointers = buffers.indices.map { index in
            buffers[index].withUnsafeMutableBytes { UnsafeRawBufferPointer(start: UnsafeRawPointer($0.baseAddress!), count: $0.count) }
        }
        // The arrays stay alive (and unmoved) for the conversion.
        try withExtendedLifetime(buffers) {
            try converter.convert(planeCount: pointers.count) { pointers[$0] }
        }
        buffers.removeAll()
        return Array(converter.buffer.prefix(converter.frameSize))
    }

    func testYUYVTo422PlanarWithStride() throws {
        // 4x2 YUYV with 4 bytes of padding per line.
        let stride = 12
        var source = [UInt8](repeating: 0xEE, count: stride * 2)
        for row in 0..<2 {
            for pair in 0..<2 {
                let base = row * stride + pair * 4
                source[base] = UInt8(10 * row + 2 * pair)         // Y0
                source[base + 1] = UInt8(100 + 10 * row + pair)  // U
                source[base + 2] = UInt8(10 * row + 2 * pair + 1) // Y1
                source[base + 3] = UInt8(200 + 10 * row + pair)  // V
            }
        }
        let format = ImageFormat(bufferType: .videoCapture, width: 4, height: 2, pixelFormat: .yuyv,
                                 planes: [PlaneFormat(bytesPerLine: UInt32(stride), sizeImage: UInt32(stride * 2))])
        let out = try convert(format, planes: [source])
        XCTAssertEqual(out, [0, 1, 2, 3, 10, 11, 12, 13,   // Y
                             100, 101, 110, 111,           // U (2 per row, 2 rows)
                             200, 201, 210, 211])          // V
    }

    func testUYVYTo422Planar() throws {
        let source: [UInt8] = [50, 1, 60, 2, 51, 3, 61, 4]
        let format = ImageFormat(bufferType: .videoCapture, width: 4, height: 1, pixelFormat: .uyvy,
                                 planes: [PlaneFormat(bytesPerLine: 8, sizeImage: 8)])
        XCTAssertEqual(try convert(format, planes: [source]), [1, 2, 3, 4, 50, 51, 60, 61])
    }

    func testNV12AndNM12To420Planar() throws {
        // 4x2: Y 8 bytes, then one chroma row UVUV.
        let luma: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        let chroma: [UInt8] = [100, 200, 101, 201]
        let single = ImageFormat(bufferType: .videoCapture, width: 4, height: 2, pixelFormat: .nv12,
                                 planes: [PlaneFormat(bytesPerLine: 4, sizeImage: 12)])
        let expected: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 100, 101, 200, 201]
        XCTAssertEqual(try convert(single, planes: [luma + chroma]), expected)
        let multi = ImageFormat(bufferType: .videoCaptureMultiplanar, width: 4, height: 2, pixelFormat: .nv12m,
                                planes: [PlaneFormat(bytesPerLine: 4, sizeImage: 8), PlaneFormat(bytesPerLine: 4, sizeImage: 4)])
        XCTAssertEqual(try convert(multi, planes: [luma, chroma]), expected)
    }

    func testYU12IsCopiedAndGreyIsMono() throws {
        let source: [UInt8] = Array(0..<12)
        let yu12 = ImageFormat(bufferType: .videoCapture, width: 4, height: 2, pixelFormat: .yuv420,
                               planes: [PlaneFormat(bytesPerLine: 4, sizeImage: 12)])
        XCTAssertEqual(try convert(yu12, planes: [source]), source)
        let grey = ImageFormat(bufferType: .videoCapture, width: 3, height: 2, pixelFormat: .grey,
                               planes: [PlaneFormat(bytesPerLine: 4, sizeImage: 8)])
        XCTAssertEqual(try convert(grey, planes: [[1, 2, 3, 0, 4, 5, 6, 0]]), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try Y4MConverter(format: grey).colorspaceTag, "mono")
        XCTAssertEqual(try Y4MConverter(format: yu12).colorspaceTag, "420jpeg")
    }

    func testShortPlaneIsAnError() throws {
        let format = ImageFormat(bufferType: .videoCapture, width: 4, height: 2, pixelFormat: .yuyv,
                                 planes: [PlaneFormat(bytesPerLine: 8, sizeImage: 16)])
        XCTAssertThrowsError(try convert(format, planes: [[UInt8](repeating: 0, count: 10)])) { error in
            XCTAssertTrue("\(error)".contains("has 10 bytes, expected at least 16"), "\(error)")
        }
    }

    func testUnsupportedFormatNamesItAndTheSupportedOnes() {
        let format = ImageFormat(bufferType: .videoCapture, width: 4, height: 2, pixelFormat: .rgb24,
                                 planes: [PlaneFormat(bytesPerLine: 12, sizeImage: 24)])
        let error = expectFrameDumpError { () throws(FrameDumpError) in try Y4MConverter.check(format) }
        XCTAssertEqual(error?.message, "--container y4m: pixel format RGB3 cannot be written as YUV4MPEG2; supported: YUYV, UYVY, NV12, NM12, YU12, YM12, GREY (use --container raw or --pixel-format)")
        XCTAssertEqual(error?.exitCode, 2)
    }

    /// vivid's YU12 at 642x362: chroma lines of 320 bytes where 321 are needed (sizeimage 348244
    /// against 348606). The check before STREAMON refuses it.
    func testY4MRefusesADriverLayoutTooSmallForThePicture() {
        let vivid = ImageFormat(bufferType: .videoCapture, width: 642, height: 362, pixelFormat: .yuv420, field: 1, colorspace: 0,
                                planes: [PlaneFormat(bytesPerLine: 642, sizeImage: 348_244)])
        let error = expectFrameDumpError { () throws(FrameDumpError) in try Y4MConverter.check(vivid) }
        XCTAssertEqual(error?.exitCode, 2)
        XCTAssertTrue(error?.message.contains("348244") ?? false, error?.message ?? "")
        XCTAssertTrue(error?.message.contains("348606") ?? false, error?.message ?? "")
        // The same size with the layout the spec gives is accepted.
        let whole = ImageFormat(bufferType: .videoCapture, width: 642, height: 362, pixelFormat: .yuv420, field: 1, colorspace: 0,
                                planes: [PlaneFormat(bytesPerLine: 642, sizeImage: 348_606)])
        XCTAssertNoThrow(try Y4MConverter.check(whole))
    }
}

/// y4m's interlace tag follows the field order in force (issue 13, item 3).
final class Y4MInterlaceTests: XCTestCase {
    func testTheTagFollowsTheFieldAndTheStandard() throws {
        XCTAssertEqual(try Y4MSink.interlaceTag(field: FieldOrder.none.rawValue, standard: nil), "Ip")
        XCTAssertEqual(try Y4MSink.interlaceTag(field: FieldOrder.interlacedTopBottom.rawValue, standard: nil), "It")
        XCTAssertEqual(try Y4MSink.interlaceTag(field: FieldOrder.interlacedBottomTop.rawValue, standard: nil), "Ib")
        XCTAssertEqual(try Y4MSink.interlaceTag(field: FieldOrder.interlaced.rawValue, standard: 0x0000_00FF), "It", "PAL: top first")
        XCTAssertEqual(try Y4MSink.interlaceTag(field: FieldOrder.interlaced.rawValue, standard: 0x0000_1000), "Ib", "NTSC-M: bottom first")
        XCTAssertEqual(try Y4MSink.interlaceTag(field: FieldOrder.interlaced.rawValue, standard: nil), "It")
        for field in [FieldOrder.alternate, .sequentialTopBottom, .sequentialBottomTop] {
            XCTAssertThrowsError(try Y4MSink.interlaceTag(field: field.rawValue, standard: nil)) { error in
                let error = error as? FrameDumpError
                XCTAssertEqual(error?.exitCode, 2)
                XCTAssertTrue(error?.message.contains("--field interlaced") ?? false, error?.message ?? "")
            }
        }
        XCTAssertEqual(FieldOrder(name: "interlaced-bt"), .interlacedBottomTop)
        XCTAssertNil(FieldOrder(name: "woven"))
    }
}
