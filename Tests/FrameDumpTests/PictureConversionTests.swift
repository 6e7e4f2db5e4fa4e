import CFrameConvert
import FrameDump
import Foundation
import V4L2
import XCTest

/// Issue 16, items 1 and 2, on the host: the PNG conversion (libswscale, and framedump's own
/// HSV) against ffmpeg's conversion of the same synthetic frame, at odd sizes with a driver's
/// line lengths and with the frame's colorimetry.
final class PictureConversionTests: XCTestCase {
    let width = 641, height = 361

    func format(_ fourcc: String, bytesPerLine: Int, sizeImage: Int, colorspace: UInt32 = 3, encoding: UInt32 = 0, quantization: UInt32 = 0) -> ImageFormat {
        ImageFormat(bufferType: .videoCapture, width: UInt32(width), height: UInt32(height), pixelFormat: FourCC(fourcc)!, field: 1,
                    colorspace: colorspace, planes: [PlaneFormat(bytesPerLine: UInt32(bytesPerLine), sizeImage: UInt32(sizeImage))],
                    ycbcrEncoding: encoding, quantization: quantization)
    }

    /// Smooth test values: luma along the diagonal, Cb across, Cr down (no sharp chroma edges,
    /// so interpolation differences stay out of the comparison).
    func luma(_ x: Int, _ y: Int) -> UInt8 { UInt8(16 + (x + y) * 219 / (641 + 361)) }
    func cb(_ x: Int) -> UInt8 { UInt8(40 + x * 170 / 641) }
    func cr(_ y: Int) -> UInt8 { UInt8(220 - y * 170 / 361) }

    func ffmpeg(_ frame: [UInt8], pixelFormat: String, matrix: String, range: String) throws -> [UInt8] {
        let directory = NSTemporaryDirectory() + "framedump-picture-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(frame).write(to: URL(fileURLWithPath: directory + "/in"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ffmpeg")
        process.arguments = ["-v", "error", "-cpuflags", "0", "-y", "-f", "rawvideo", "-pix_fmt", pixelFormat, "-s", "\(width)x\(height)",
                             "-i", directory + "/in", "-vf", "scale=flags=bilinear+full_chroma_int+accurate_rnd:in_color_matrix=\(matrix):in_range=\(range)",
                             "-f", "rawvideo", "-pix_fmt", "rgb24", directory + "/out"]
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "ffmpeg")
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory + "/out")))
    }

    /// The sink's picture of `frame` (one buffer); no closure, so no typed-throws closure.
    func picture(_ sink: PNGSink, _ frame: [UInt8]) throws -> [UInt8] {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(frame.count, 1), alignment: 64)
        defer { copy.deallocate() }
        copy.copyBytes(from: frame)
        return Array(try sink.convert([UnsafeRawBufferPointer(rebasing: copy[0..<frame.count])]))
    }

    func within3(_ ours: UnsafeRawBufferPointer, _ reference: [UInt8]) -> (share: Double, worst: Int) {
        XCTAssertEqual(ours.count, reference.count)
        var within = 0, worst = 0
        for (a, b) in zip(ours, reference) {
            let difference = abs(Int(a) - Int(b))
            if difference <= 3 { within += 1 }
            worst = max(worst, difference)
        }
        return (Double(within) / Double(max(reference.count, 1)), worst)
    }

    /// Item 1: YUYV at 641x361 with vivid's 1282-byte lines (the last pixel pair has no Cr;
    /// framedump repeats the one before), BT.709 limited range: as ffmpeg converts it.
    func testOddWidthYUYVWithTheDriversLinesMatchesFFmpeg() throws {
        let stride = width * 2
        var frame = [UInt8](repeating: 0, count: stride * height)
        var reference = [UInt8](repeating: 0, count: (width + 1) / 2 * 4 * height)
        for y in 0..<height {
            for pair in 0..<(width + 1) / 2 {
                let x = pair * 2
                let values = [luma(x, y), cb(x), luma(min(x + 1, width - 1), y), cr(y)]
                for k in 0..<4 {
                    if pair * 4 + k < stride { frame[y * stride + pair * 4 + k] = values[k] }
                    reference[y * (width + 1) / 2 * 4 + pair * 4 + k] = values[k]
                }
            }
        }
        let sink = try PNGSink(directory: "/nonexistent", every: 1, format: format("YUYV", bytesPerLine: stride, sizeImage: frame.count))
        let ours = try picture(sink, frame)
        let expected = try ffmpeg(reference, pixelFormat: "yuyv422", matrix: "bt709", range: "limited")
        let (share, worst) = ours.withUnsafeBytes { within3($0, expected) }
        XCTAssertGreaterThanOrEqual(share, 0.999, "worst \(worst)")
        XCTAssertLessThanOrEqual(worst, 3)
        // BT.601 would be a different picture: the matrix is really applied.
        let bt601 = try ffmpeg(reference, pixelFormat: "yuyv422", matrix: "bt601", range: "limited")
        XCTAssertLessThan(ours.withUnsafeBytes { within3($0, bt601) }.share, 0.9)
    }

    /// Item 1: NV12 at 641x361 with padded 704-byte lines (the driver's bytesperline, not the
    /// width), BT.601 full range (the JPEG colorspace's default quantization).
    func testNV12WithPaddedLinesAndFullRangeMatchesFFmpeg() throws {
        let stride = 704, chromaWidth = (width + 1) / 2, chromaRows = (height + 1) / 2
        let size = stride * height + stride * chromaRows
        var frame = [UInt8](repeating: 0xEE, count: size)
        var reference: [UInt8] = []
        for y in 0..<height { for x in 0..<width { frame[y * stride + x] = luma(x, y); reference.append(luma(x, y)) } }
        for y in 0..<chromaRows {
            for c in 0..<chromaWidth {
                frame[stride * height + y * stride + c * 2] = cb(c * 2)
                frame[stride * height + y * stride + c * 2 + 1] = cr(y * 2)
                reference += [cb(c * 2), cr(y * 2)]
            }
        }
        let sink = try PNGSink(directory: "/nonexistent", every: 1, format: format("NV12", bytesPerLine: stride, sizeImage: size, colorspace: 7))
        let ours = try picture(sink, frame)
        let expected = try ffmpeg(reference, pixelFormat: "nv12", matrix: "bt601", range: "full")
        let (share, worst) = ours.withUnsafeBytes { within3($0, expected) }
        XCTAssertGreaterThanOrEqual(share, 0.999, "worst \(worst)")
    }

    /// Item 2: HSV by its hsv_enc, both encodings, against the textbook conversion.
    func testHSVPixelsFollowTheEncoding() {
        func rgb(_ h: Int, _ s: Int, _ v: Int, _ steps: Int) -> [Int] {
            var out: [UInt8] = [0, 0, 0]
            cfc_hsv_pixel(Int32(h), Int32(s), Int32(v), Int32(steps), &out)
            return out.map(Int.init)
        }
        // Hue 0-179: 2 degrees a step. Hue 0-255: 360/255 degrees a step (vivid: 120 degrees = 85).
        XCTAssertEqual(rgb(0, 255, 255, 180), [255, 0, 0])
        XCTAssertEqual(rgb(60, 255, 255, 180), [0, 255, 0])
        XCTAssertEqual(rgb(120, 255, 255, 180), [0, 0, 255])
        XCTAssertEqual(rgb(30, 255, 191, 180), [191, 191, 0])
        XCTAssertEqual(rgb(85, 255, 255, 256), [0, 255, 0])
        XCTAssertEqual(rgb(170, 255, 255, 256), [0, 0, 255])
        XCTAssertEqual(rgb(170, 255, 255, 180), [255, 0, 85], "170 in 0-179 is 340 degrees: red with a third of blue")
        XCTAssertEqual(rgb(0, 0, 128, 256), [128, 128, 128])
        XCTAssertEqual(rgb(90, 128, 200, 180), [100, 200, 200])
    }

    /// Item 2: limited-range R'G'B' and limited-range luma are expanded; full range is kept.
    func testLimitedRangeRGBAndGreyAreExpanded() throws {
        let rgbFrame: [UInt8] = Array(repeating: [16, 126, 235], count: width * height).flatMap { $0 }
        let limited = try PNGSink(directory: "/x", every: 1, format: format("RGB3", bytesPerLine: width * 3, sizeImage: rgbFrame.count, colorspace: 8, quantization: 2))
        let full = try PNGSink(directory: "/x", every: 1, format: format("RGB3", bytesPerLine: width * 3, sizeImage: rgbFrame.count, colorspace: 8))
        XCTAssertEqual(Array(try picture(limited, rgbFrame).prefix(3)), [0, 128, 255])
        XCTAssertEqual(Array(try picture(full, rgbFrame).prefix(3)), [16, 126, 235])
        let grey: [UInt8] = Array(repeating: [16, 235], count: (width + 1) / 2).flatMap { $0 }.prefix(width).map { $0 }
        let greyFrame = Array(repeating: grey, count: height).flatMap { $0 }
        let greySink = try PNGSink(directory: "/x", every: 1, format: format("GREY", bytesPerLine: width, sizeImage: greyFrame.count, colorspace: 8, quantization: 2))
        XCTAssertEqual(Array(try picture(greySink, greyFrame).prefix(6)), [0, 0, 0, 255, 255, 255], "limited-range GREY is expanded")
        // Y10: 10-bit limited range, 64...940, little-endian in 16 bits.
        let y10Row: [UInt8] = (0..<width).flatMap { x -> [UInt8] in x % 2 == 0 ? [64, 0] : [0xAC, 0x03] }
        let y10Frame = Array(repeating: y10Row, count: height).flatMap { $0 }
        let y10 = try PNGSink(directory: "/x", every: 1, format: format("Y10", bytesPerLine: width * 2, sizeImage: y10Frame.count, colorspace: 8, quantization: 2))
        XCTAssertEqual(Array(try picture(y10, y10Frame).prefix(6)), [0, 0, 0, 255, 255, 255], "limited-range Y10 is expanded")
        // DEFAULT quantization of a luma-only format is full range (the kernel's generator and
        // v4l2-ctl count it as not Y'CbCr; vivid's GREY black is 0).
        let defaultGrey = try PNGSink(directory: "/x", every: 1, format: format("GREY", bytesPerLine: width, sizeImage: greyFrame.count, colorspace: 8))
        XCTAssertEqual(Array(try picture(defaultGrey, greyFrame).prefix(6)), [16, 16, 16, 235, 235, 235], "full-range GREY is kept")
    }

    /// A frame shorter than sizeimage is an error, not a picture of stale bytes.
    func testShortFrameIsAnErrorNotAPicture() throws {
        let sink = try PNGSink(directory: "/x", every: 1, format: format("YUYV", bytesPerLine: 1282, sizeImage: 1282 * 361))
        let short = [UInt8](repeating: 0, count: 1000)
        do {
            _ = try picture(sink, short)
            XCTFail("a short frame converted")
        } catch let error as FrameDumpError {
            XCTAssertEqual(error.exitCode, 1)
            XCTAssertTrue(error.message.contains("has 1000 bytes in plane 0, expected 462800"), error.message)
        }
    }
}
