import FrameBridge
import FrameDump
import V4L2
import XCTest

final class ArgumentParsingTests: XCTestCase {
    func testSizeParsesWidthAndHeight() throws {
        let size = try ArgumentParsing.size("640x480")
        XCTAssertEqual(size.width, 640)
        XCTAssertEqual(size.height, 480)
        let upper = try ArgumentParsing.size("1280X720")
        XCTAssertEqual(upper.width, 1280)
        XCTAssertEqual(upper.height, 720)
    }

    func testMalformedSizesNameTheOption() {
        for text in ["640", "640x", "x480", "640x480x2", "axb", "-640x480", "0x480", "640x0", "+640x480", "", "99999x10"] {
            let error = expectFrameDumpError { () throws(FrameDumpError) in try ArgumentParsing.size(text) }
            XCTAssertEqual(error?.kind, .usage, text)
            XCTAssertTrue(error?.message.hasPrefix("--size") ?? false, "\(text): \(error?.message ?? "")")
        }
    }

    func testFourCC() throws {
        XCTAssertEqual(try ArgumentParsing.fourCC("YUYV"), .yuyv)
        XCTAssertEqual(try ArgumentParsing.fourCC("NM12"), .nv12m)
        XCTAssertEqual(try ArgumentParsing.fourCC("Y10").description, "Y10")
        for bad in ["", "YUYVX", "YU\u{7}V", " YUV", "ÄÖÜ"] {
            let error = expectFrameDumpError { () throws(FrameDumpError) in try ArgumentParsing.fourCC(bad) }
            XCTAssertTrue(error?.message.hasPrefix("--pixel-format: bad FOURCC") ?? false, bad)
            XCTAssertEqual(error?.exitCode, 2)
        }
    }

    func testFramesPerSecond() throws {
        XCTAssertEqual(try ArgumentParsing.framesPerSecond("30"), 30)
        XCTAssertEqual(try ArgumentParsing.framesPerSecond("29.97"), 29.97, accuracy: 1e-9)
        XCTAssertEqual(try ArgumentParsing.framesPerSecond("30000/1001"), 30000.0 / 1001.0, accuracy: 1e-9)
        for bad in ["0", "-5", "abc", "30/0", "inf", "nan", "", "1/"] {
            let error = expectFrameDumpError { () throws(FrameDumpError) in try ArgumentParsing.framesPerSecond(bad) }
            XCTAssertTrue(error?.message.hasPrefix("--fps") ?? false, bad)
        }
    }

    func testSetControlAcceptsRepeatsAndCommas() throws {
        let controls = try ArgumentParsing.controls(["osd_text_mode=2", "brightness=10,contrast=-3", "hue=0x10"])
        XCTAssertEqual(controls, [
            ControlSetting(name: "osd_text_mode", value: 2),
            ControlSetting(name: "brightness", value: 10),
            ControlSetting(name: "contrast", value: -3),
            ControlSetting(name: "hue", value: 16),
        ])
    }

    func testMalformedSetControlNamesTheOption() {
        for bad in ["osd_text_mode", "=2", "osd_text_mode=", "osd_text_mode=two", "a=1,,b=2", "a=1,b", "a=--1"] {
            let error = expectFrameDumpError { () throws(FrameDumpError) in try ArgumentParsing.controls([bad]) }
            XCTAssertTrue(error?.message.hasPrefix("--set-ctrl: malformed") ?? false, "\(bad): \(error?.message ?? "")")
            XCTAssertEqual(error?.kind, .usage)
        }
    }

    func testMemoryKindsAndSources() throws {
        XCTAssertEqual(try ArgumentParsing.memoryKind("mmap"), .mmap)
        XCTAssertEqual(try ArgumentParsing.memoryKind("userptr"), .userPointer)
        XCTAssertEqual(try ArgumentParsing.memoryKind("DMABUF"), .dmabuf)
        let error = expectFrameDumpError { () throws(FrameDumpError) in try ArgumentParsing.memoryKind("shm") }
        XCTAssertEqual(error?.message, "--memory: unknown memory kind \"shm\"; expected mmap, userptr or dmabuf")
        XCTAssertEqual(try ArgumentParsing.dmabufSource("vgem"), .vgem(nil))
        XCTAssertEqual(try ArgumentParsing.dmabufSource("/dev/video1"), .device("/dev/video1"))
        XCTAssertEqual(try ArgumentParsing.dmabufSource("/dev/dri/card1"), .vgem("/dev/dri/card1"))
        XCTAssertEqual(try ArgumentParsing.container("y4m"), .y4m)
        XCTAssertNotNil(expectFrameDumpError { () throws(FrameDumpError) in try ArgumentParsing.container("mkv") })
        XCTAssertEqual(try ArgumentParsing.errorFramePolicy("skip"), .skip)
        XCTAssertNotNil(expectFrameDumpError { () throws(FrameDumpError) in try ArgumentParsing.errorFramePolicy("drop") })
    }

    func testCaptureArgumentsAreCheckedBeforeAnyDeviceIsOpened() {
        // The device does not exist: each error must come from the option, not from open.
        let cases: [(CaptureArguments, String)] = [
            (CaptureArguments(device: "/nonexistent/video9", count: 0), "-n: the frame count must be at least 1, got 0"),
            (CaptureArguments(device: "/nonexistent/video9", count: -3), "-n: the frame count must be at least 1, got -3"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, buffers: 0), "--buffers: 0 is out of range 1...32"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, buffers: 33), "--buffers: 33 is out of range 1...32"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, pngDirectory: "/tmp", every: 0), "--every: must be at least 1, got 0"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, size: "640by480"), "--size: malformed size \"640by480\"; expected WIDTHxHEIGHT such as 640x480"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, memory: "dmabuf"), "--memory dmabuf needs --dmabuf-from"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, memory: "ram"), "--memory: unknown memory kind"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, dmabufFrom: "vgem"), "--dmabuf-from vgem is only used with --memory dmabuf"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, output: "/nonexistent-dir/out.raw"), "-o /nonexistent-dir/out.raw: cannot create the file: directory /nonexistent-dir: ENOENT"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, output: "/tmp"), "-o /tmp: is a directory"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, container: "y4m"), "--container y4m needs -o FILE"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, timeoutSeconds: 0), "--timeout: must be a positive number"),
            (CaptureArguments(device: "/nonexistent/video9", count: 1, setControls: ["brightness"]), "--set-ctrl: malformed \"brightness\""),
        ]
        for (arguments, expected) in cases {
            let error = expectFrameDumpError { () throws(FrameDumpError) in try CaptureOptions(arguments: arguments) }
            XCTAssertTrue(error?.message.hasPrefix(expected) ?? false, "expected \(expected), got \(error?.message ?? "nothing")")
            XCTAssertEqual(error?.exitCode, 2, expected)
            XCTAssertFalse(error?.message.contains("\n") ?? true)
        }
    }

    func testCaptureArgumentsParse() throws {
        let options = try CaptureOptions(arguments: CaptureArguments(
            device: "/dev/video3", count: 12, memory: "mmap", buffers: 6, input: 1, pixelFormat: "NV12", size: "320x180",
            fps: "60", setControls: ["osd_text_mode=2,brightness=100"], output: "/tmp/x.y4m", container: "y4m",
            pngDirectory: "/tmp", every: 5, errorFrames: "skip", timeoutSeconds: 2, libv4l2: true))
        XCTAssertEqual(options.devicePath, "/dev/video3")
        XCTAssertEqual(options.count, 12)
        XCTAssertEqual(options.memory, .mmap)
        XCTAssertEqual(options.buffers, 6)
        XCTAssertEqual(options.format.input, 1)
        XCTAssertEqual(options.format.pixelFormat, .nv12)
        XCTAssertEqual(options.format.width, 320)
        XCTAssertEqual(options.format.height, 180)
        XCTAssertEqual(options.format.framesPerSecond, 60)
        XCTAssertEqual(options.format.controls.map(\.description), ["osd_text_mode=2", "brightness=100"])
        XCTAssertEqual(options.container, .y4m)
        XCTAssertEqual(options.pngEvery, 5)
        XCTAssertEqual(options.errorFramePolicy, .skip)
        XCTAssertEqual(options.frameTimeoutSeconds, 2)
        XCTAssertEqual(options.backend.name, "libv4l2")
    }

    func testErrorsAreOneLine() {
        let error = FrameDumpError(.runtime, "first\nsecond\r\nthird\n")
        XCTAssertEqual(error.message, "first second third")
        XCTAssertEqual(error.exitCode, 1)
        XCTAssertEqual(FrameDumpError.usage("x").exitCode, 2)
        let capture = FrameDumpError(CaptureError(.invalidConfiguration, "/dev/video0: no such size"))
        XCTAssertEqual(capture.kind, .usage)
        let device = FrameDumpError(V4L2Error(device: "/dev/video0", operation: "VIDIOC_STREAMON", errno: .ioError))
        XCTAssertEqual(device.kind, .runtime)
        XCTAssertTrue(device.message.hasPrefix("/dev/video0: VIDIOC_STREAMON failed: EIO"), device.message)
    }
}
