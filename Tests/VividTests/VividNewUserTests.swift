import Foundation
import FrameBridge
import V4L2
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Issue 16 against the real vivid driver: what a new user hit.
final class VividNewUserTests: XCTestCase {
    typealias Run = ChildProcess.Result
    let work = "/tmp/framedump-newuser-tests"

    override func setUpWithError() throws {
        _ = try Vivid.open()
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: VividCLITests.framedump))
    }

    private func framedump(_ arguments: [String]) throws -> Run {
        try ChildProcess.run(VividCLITests.framedump, arguments)
    }

    /// Items 1 and 2: the odd size on the Rec. 709 HDMI input converts now (libswscale, with
    /// the driver's lines and colorimetry; VividPNGTests compares the pictures with ffmpeg's),
    /// and a format that cannot be right is refused before streaming (exit 2, no directory).
    func testPNGsConvertAtOddSizesAndUnconvertibleFormatsAreRefusedBeforeStreaming() throws {
        let converted: [[String]] = [
            ["--input", "3", "--pixel-format", "YUYV", "--size", "641x361"],
            ["--input", "3", "--pixel-format", "NV12", "--size", "641x361"],
            ["--input", "3", "--pixel-format", "UYVY", "--size", "640x360"],
        ]
        for options in converted {
            let directory = "\(work)/png-\(options[3])"
            let result = try framedump(["capture", "-d", Vivid.main, "-n", "1", "--png-dir", directory, "--quiet"] + options)
            XCTAssertEqual(result.status, 0, "\(options): \(result.stderr)")
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(directory)/frame-000000.png"), "\(options)")
        }
        let directory = "\(work)/png-BG10"
        let refused = try framedump(["capture", "-d", Vivid.main, "-n", "1", "--png-dir", directory, "--quiet",
                                     "--input", "0", "--pixel-format", "BG10", "--size", "640x360"])
        XCTAssertEqual(refused.status, 2, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("--png-dir: BG10 frames cannot be converted to a correct PNG"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory), "nothing made")
        print("newuser: png BG10: \(refused.stderr.trimmingCharacters(in: .newlines))")
    }

    /// Item 4: vivid's YU12 at 642x362 has 320-byte chroma lines where 321 are needed: its
    /// frames (bytesused 348244) are shorter than its sizeimage (348606), so it shows only at
    /// the first frame. Nothing is written and no file is left (the header goes with frame 0).
    func testY4MLayoutMismatchFailsBeforeWritingAnything() throws {
        let output = "\(work)/yu12.y4m"
        let result = try framedump(["capture", "-d", Vivid.main, "--input", "3", "--pixel-format", "YU12", "--size", "642x362",
                                    "-n", "3", "-o", output, "--container", "y4m", "--quiet"])
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("YU12 642x362 frame has 348244 bytes, expected at least 348606"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output), "no header-only file")
        print("newuser: y4m YU12 642x362: \(result.stderr.trimmingCharacters(in: .newlines))")
    }

    /// Item 7: `framing` answers while another handle streams (no S_FMT, no REQBUFS).
    func testFramingWorksWhileAnotherProcessStreams() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic())
        try pin.start()
        defer { pin.stop() }
        XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)))
        let plain = try framedump(["framing", "-d", Vivid.main, "--json"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.text.contains("\"frameSizeMinimum\""), plain.text)
        let tried = try framedump(["framing", "-d", Vivid.main, "--pixel-format", "NV12", "--size", "320x180"])
        XCTAssertEqual(tried.status, 0, tried.stderr)
        XCTAssertTrue(tried.text.contains("NV12 320x180"), tried.text)
        XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)), "the stream goes on")
        XCTAssertEqual(try device.format(pin.bufferType).pixelFormat, .yuyv, "the format in force is unchanged")
        print("newuser: framing while streaming: exit \(plain.status) and \(tried.status)")
    }

    /// Item 8: vivid's string control is named with its type, exit 2.
    func testSetControlOnTheStringControlIsAClearUsageError() throws {
        let result = try framedump(["capture", "-d", Vivid.main, "-n", "1", "--set-ctrl", "string=1", "--quiet"])
        XCTAssertEqual(result.status, 2, result.stderr)
        XCTAssertTrue(result.stderr.contains("control string of \(Vivid.main) is a str control"), result.stderr)
    }

    /// Item 9: big-endian formats are listed in v4l2-ctl's spelling and can be typed back.
    func testBigEndianFormatNamesCanBeTypedBack() throws {
        let info = try framedump(["info", "-d", Vivid.main])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.text.contains("Y16 -BE"), info.text)
        XCTAssertFalse(info.text.contains("Y16?"), info.text)
        for spelling in ["Y16 -BE", "0xa0363159"] {
            let output = "\(work)/y16be.raw"
            let result = try framedump(["capture", "-d", Vivid.main, "--input", "0", "--size", "320x180", "--pixel-format", spelling,
                                        "-n", "1", "-o", output, "--quiet", "--json"])
            XCTAssertEqual(result.status, 0, "\(spelling): \(result.stderr)")
            XCTAssertTrue(result.text.contains("\"pixelFormat\" : \"Y16 -BE\"") || result.text.contains("\"pixelFormat\":\"Y16 -BE\""), result.text)
        }
    }

    /// Item 10: vivid's one-shot queue_setup fault reaches the real REQBUFS (no trial request swallows it).
    func testInjectedReqbufsErrorFailsTheCapture() throws {
        let result = try framedump(["capture", "-d", Vivid.main, "-n", "1", "--set-ctrl", "inject_vidioc_reqbufs_error=1", "--quiet"])
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("VIDIOC_REQBUFS"), result.stderr)
        let again = try framedump(["capture", "-d", Vivid.main, "-n", "1", "--quiet"])
        XCTAssertEqual(again.status, 0, "the fault was one-shot: \(again.stderr)")
    }
}
