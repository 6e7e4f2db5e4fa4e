import Foundation
import FrameBridgeTestSupport
import FrameDump
import XCTest

/// The framedump binary itself (built beside this test bundle): what --help shows and how a
/// bad value is reported. No device is needed: every value here is refused, or accepted up to
/// the open of a device that does not exist.
final class CommandLineTests: XCTestCase {
    static var framedump: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("framedump").path
    }

    let missing = "/nonexistent/video9"

    override func setUpWithError() throws {
        // A failure, not a skip: these tests are the only check of the command line on the host.
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: Self.framedump), "framedump not built at \(Self.framedump)")
    }

    func framedump(_ arguments: [String]) throws -> ChildProcess.Result {
        try ChildProcess.run(Self.framedump, arguments)
    }

    /// The help text with its line breaks undone (the parser wraps at 80 columns).
    func help(_ command: String) throws -> String {
        let result = try framedump([command, "--help"])
        XCTAssertEqual(result.status, 0, result.stderr)
        return result.text.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    func testHelpListsTheAllowedValues() throws {
        let capture = try help("capture")
        for expected in [
            "--memory <memory> The memory kind of the buffers (default mmap). (values: mmap, userptr, dmabuf)",
            "(values: raw, y4m)",
            "(values: auto, on, off)",
            "--error-frames <error-frames> Frames with the ERROR flag. (values: deliver, skip; default: deliver)",
            "(values: deliver, skip; default: skip)",
            "--buffers <N> Buffers to ask the allocator for (1...32;",
            "width and height 1...16384",
        ] {
            XCTAssertTrue(capture.contains(expected), "capture --help lacks \"\(expected)\":\n\(capture)")
        }
        let framing = try help("framing")
        XCTAssertTrue(framing.contains("(values: mmap, userptr, dmabuf)"), framing)
        XCTAssertTrue(framing.contains("(1...32;"), framing)
    }

    /// Each bad value: exit 2, one line naming the option and the value, with the allowed
    /// values or an example of a good one; nothing on standard output.
    func testBadValuesAreUsageErrorsNamingTheOption() throws {
        let cases: [(arguments: [String], option: String, good: String)] = [
            (["-n", "0"], "-n <N>", "such as 30"),
            (["-n", "-3"], "-n <N>", "such as 30"),
            (["-n", "many"], "-n <N>", "such as 30"),
            (["--buffers", "0"], "--buffers <N>", "1...32, such as 4"),
            (["--buffers", "33"], "--buffers <N>", "1...32, such as 4"),
            (["--every", "0"], "--every <N>", "such as 10"),
            (["--timeout", "0"], "--timeout <SECONDS>", "such as 5 or 0.5"),
            (["--timeout", "inf"], "--timeout <SECONDS>", "such as 5 or 0.5"),
            (["--timeout", "-2"], "--timeout <SECONDS>", "such as 5 or 0.5"),
            (["--buffers", "-1"], "--buffers <N>", "1...32, such as 4"),
            (["--input", "-1"], "--input <N>", "such as 0"),
            (["--fps", "-30"], "--fps <F>", "such as 30, 29.97 or 30000/1001"),
            (["--reconnect", "--reconnect-timeout", "-1"], "--reconnect-timeout <SECONDS>", "such as 5 or 0.5"),
            (["--size", "640by480"], "--size <WxH>", "such as 640x480"),
            (["--size", "0x480"], "--size <WxH>", "1...16384, such as 640x480"),
            (["--size", "99999x10"], "--size <WxH>", "1...16384, such as 640x480"),
            (["--fps", "0"], "--fps <F>", "such as 30, 29.97 or 30000/1001"),
            (["--fps", "30/0"], "--fps <F>", "such as 30, 29.97 or 30000/1001"),
            (["--fps", "0.0001"], "--fps <F>", "from 0.001 to 10000"),
            (["--fps", "1/10000"], "--fps <F>", "from 0.001 to 10000"),
            (["--fps", "20000"], "--fps <F>", "from 0.001 to 10000"),
            (["--pixel-format", "YUYVX"], "--pixel-format <fourcc>", "such as YUYV or NV12"),
            (["--set-ctrl", "brightness"], "--set-ctrl <name=value>", "such as osd_text_mode=2"),
            (["--set-ctrl", "a=1,b=two"], "--set-ctrl <name=value>", "such as osd_text_mode=2"),
            (["--input", "x"], "--input <N>", "such as 0"),
            (["--dmabuf-from", "vgem:"], "--dmabuf-from <DEV|vgem>", "vgem:/dev/dri/cardN"),
            (["--memory", "ram"], "--memory <memory>", "'mmap', 'userptr' or 'dmabuf'"),
            (["--container", "mkv"], "--container <container>", "'raw' and 'y4m'"),
            (["--direct-io", "sometimes"], "--direct-io <direct-io>", "'auto', 'on' or 'off'"),
            (["--error-frames", "drop"], "--error-frames <error-frames>", "'deliver' and 'skip'"),
            (["--corrupt-frames", "keep"], "--corrupt-frames <corrupt-frames>", "'deliver' and 'skip'"),
        ]
        for (arguments, option, good) in cases {
            let command = ["capture", "-d", missing] + (arguments.contains("-n") ? [] : ["-n", "1"]) + arguments
            let result = try framedump(command)
            let value = arguments.last!
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("framedump: The value '\(value)' is invalid for '\(option)'"), "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(good), "\(arguments): no example \"\(good)\" in \(result.stderr)")
            XCTAssertEqual(result.stderr.filter { $0 == "\n" }.count, 1, "one line: \(result.stderr)")
            XCTAssertTrue(result.stdout.isEmpty)
        }
        // framing takes the same option groups.
        for arguments in [["--memory", "shm"], ["--buffers", "40"], ["--size", "x480"]] {
            let result = try framedump(["framing", "-d", missing] + arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("framedump: The value '\(arguments[1])' is invalid for '\(arguments[0]) <"), result.stderr)
        }
    }

    /// Options that need another one: still exit 2, from CaptureOptions.validate, before any device is opened.
    func testOptionsThatNeedAnotherAreUsageErrors() throws {
        let cases: [([String], String)] = [
            (["--memory", "dmabuf"], "framedump: --memory dmabuf needs --dmabuf-from DEVICE"),
            (["--dmabuf-from", "vgem"], "framedump: --dmabuf-from vgem is only used with --memory dmabuf"),
            (["--container", "y4m"], "framedump: --container y4m needs -o FILE"),
            (["--direct-io", "on"], "framedump: --direct-io on needs -o FILE"),
            (["--every", "2"], "framedump: --every needs --png-dir DIR or --jpeg-dir DIR"),
            (["--reconnect-timeout", "3"], "framedump: --reconnect-timeout needs --reconnect"),
            (["--libv4l2", "--memory", "userptr"], "framedump: --libv4l2 works only with --memory mmap"),
        ]
        for (arguments, expected) in cases {
            let result = try framedump(["capture", "-d", missing, "-n", "1"] + arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix(expected), "\(arguments): \(result.stderr)")
        }
    }

    /// Several devices: what they cannot share, and --device-options, refused with exit 2 before
    /// any device is opened.
    func testSeveralDevicesUsageErrors() throws {
        let two = ["capture", "-d", missing, "-d", missing + "0", "-n", "1"]
        let cases: [([String], String)] = [
            (["-o", "/tmp/same.raw"], "framedump: -o /tmp/same.raw: devices 0 and 1 would write to the same place; put {n}"),
            (["-o", "-"], "framedump: -o -: 2 devices cannot share standard output"),
            (["--png-dir", "/tmp/pictures"], "framedump: --png-dir /tmp/pictures: devices 0 and 1 would write to the same place"),
            (["--reconnect"], "framedump: --reconnect works with one -d only"),
            (["--device-options", "2=--size 320x180"], "framedump: --device-options 2=--size 320x180: there is no device 2"),
            (["--device-options", "--size 320x180"], "framedump: --device-options --size 320x180: expected N=OPTIONS"),
            (["--device-options", "1=--size 320"], "framedump: --device-options 1: "),
            (["--device-options", "1=--count 3"], "framedump: --device-options 1: "),
        ]
        for (arguments, expected) in cases {
            let result = try framedump(two + arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix(expected), "\(arguments): \(result.stderr)")
        }
        let same = try framedump(["capture", "-d", missing, "-d", missing, "-n", "1"])
        XCTAssertEqual(same.status, 2, same.stderr)
        XCTAssertTrue(same.stderr.contains("is given twice"), same.stderr)
        // {n} makes the outputs distinct: past validation, the open of the missing device fails (exit 1).
        let distinct = try framedump(two + ["-o", "/tmp/framedump-never-{n}.raw", "--device-options", "1=--size 320x180 --memory mmap"])
        XCTAssertEqual(distinct.status, 1, distinct.stderr)
        XCTAssertTrue(distinct.stderr.contains(missing), distinct.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/framedump-never-0.raw"))
    }

    /// Every option with a good value (in any case for the enumerations) gets past parsing and
    /// validation: the capture fails only at the open of the missing device, a runtime error.
    func testGoodValuesReachTheDevice() throws {
        let output = makeTemporaryDirectory(self)
        let result = try framedump(["capture", "-d", missing, "-n", "12", "--memory", "MMAP", "--buffers", "32", "--input", "1",
                                    "--pixel-format", "NV12", "--size", "320X180", "--fps", "30000/1001",
                                    "--set-ctrl", "osd_text_mode=2,brightness=0x10", "--set-ctrl", "contrast=-3",
                                    "-o", output + "/out.y4m", "--container", "Y4M", "--png-dir", output, "--every", "5",
                                    "--error-frames", "skip", "--corrupt-frames", "DELIVER", "--timeout", "0.5",
                                    "--reconnect", "--reconnect-timeout", "2", "--quiet"])
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.hasPrefix("framedump: \(missing): open failed: ENOENT"), result.stderr)
        XCTAssertFalse(fileExists(output + "/out.y4m"), "no file before the device streams")
        let direct = try framedump(["capture", "-d", missing, "-n", "1", "-o", output + "/out.raw", "--direct-io", "OFF",
                                    "--memory", "dmabuf", "--dmabuf-from", "vgem:/dev/dri/card0"])
        XCTAssertEqual(direct.status, 1, direct.stderr)
    }
}
