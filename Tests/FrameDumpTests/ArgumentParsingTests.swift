import FrameBridge
import FrameDump
import Foundation
import V4L2
import XCTest

final class ArgumentParsingTests: XCTestCase {
    func testSizeParsesWidthAndHeight() throws {
        let size = try OptionValues.size("640x480")
        XCTAssertEqual(size, RequestedSize(width: 640, height: 480))
        XCTAssertEqual(try OptionValues.size("1280X720"), RequestedSize(width: 1280, height: 720))
        XCTAssertEqual(try OptionValues.size("16384x1"), RequestedSize(width: 16384, height: 1))
    }

    func testMalformedSizesShowAGoodOne() {
        for text in ["640", "640x", "x480", "640x480x2", "axb", "-640x480", "+640x480", ""] {
            XCTAssertEqual(expectOptionValueError { () throws(OptionValueError) in try OptionValues.size(text) },
                           OptionValueError("malformed size; expected WIDTHxHEIGHT such as 640x480"), text)
        }
        for text in ["0x480", "640x0", "99999x10", "16385x1"] {
            XCTAssertEqual(expectOptionValueError { () throws(OptionValueError) in try OptionValues.size(text) },
                           OptionValueError("out of range; width and height must be 1...16384, such as 640x480"), text)
        }
    }

    func testFourCC() throws {
        XCTAssertEqual(try OptionValues.fourCC("YUYV"), .yuyv)
        XCTAssertEqual(try OptionValues.fourCC("NM12"), .nv12m)
        XCTAssertEqual(try OptionValues.fourCC("Y10").description, "Y10")
        for bad in ["", "YUYVX", "YU\u{7}V", " YUV", "ÄÖÜ"] {
            let error = expectOptionValueError { () throws(OptionValueError) in try OptionValues.fourCC(bad) }
            XCTAssertTrue(error?.message.hasPrefix("bad FOURCC; expected up to four characters such as YUYV or NV12") ?? false, bad)
        }
    }

    /// Fourcc names that can be typed: big-endian and unprintable codes use v4l2-ctl's spelling and read back.
    func testBigEndianAndUnprintableFourCCsUseV4L2CtlSpellingAndReadBack() throws {
        let y16BE = FourCC(rawValue: 0x2036_3159 | FourCC.bigEndianFlag)
        XCTAssertEqual(y16BE.description, "Y16 -BE")
        XCTAssertEqual(FourCC(rawValue: 0x3531_5258 | FourCC.bigEndianFlag).description, "XR15-BE")
        XCTAssertEqual(try OptionValues.fourCC("Y16 -BE"), y16BE)
        XCTAssertEqual(try OptionValues.fourCC("Y16-BE"), y16BE)
        XCTAssertEqual(try OptionValues.fourCC("0x20363159"), FourCC("Y16"))
        XCTAssertEqual(try OptionValues.fourCC("0xa0363159"), y16BE)
        let odd = FourCC(rawValue: 0x0102_4142)
        XCTAssertEqual(odd.description, "0x01024142")
        XCTAssertEqual(FourCC(odd.description), odd)
        // JSON carries the same spelling and reads back.
        let data = try JSONEncoder().encode([y16BE, odd, .yuyv])
        XCTAssertEqual(String(decoding: data, as: UTF8.self), #"["Y16 -BE","0x01024142","YUYV"]"#)
        XCTAssertEqual(try JSONDecoder().decode([FourCC].self, from: data), [y16BE, odd, .yuyv])
    }

    func testFramesPerSecond() throws {
        XCTAssertEqual(try OptionValues.framesPerSecond("30"), 30)
        XCTAssertEqual(try OptionValues.framesPerSecond("29.97"), 29.97, accuracy: 1e-9)
        XCTAssertEqual(try OptionValues.framesPerSecond("30000/1001"), 30000.0 / 1001.0, accuracy: 1e-9)
        XCTAssertEqual(try OptionValues.framesPerSecond("10000"), 10000)
        XCTAssertEqual(try OptionValues.framesPerSecond("0.001"), 0.001)
        XCTAssertEqual(try OptionValues.framesPerSecond("1/1000"), 0.001)
        for bad in ["0", "-5", "abc", "30/0", "inf", "nan", "", "1/", "10001", "0.0001", "0.0009", "1/10000", "1e-300"] {
            let error = expectOptionValueError { () throws(OptionValueError) in try OptionValues.framesPerSecond(bad) }
            XCTAssertEqual(error?.message, "expected a frame rate from 0.001 to 10000 frames per second, such as 30, 29.97 or 30000/1001", bad)
        }
    }

    /// -n, --buffers, --every, --timeout, --input: the range of each, at both ends.
    func testCountsAndSecondsAreCheckedAtBothEnds() throws {
        XCTAssertEqual(try OptionValues.frameCount("1"), 1)
        XCTAssertEqual(try OptionValues.bufferCount("1"), 1)
        XCTAssertEqual(try OptionValues.bufferCount("32"), 32)
        XCTAssertEqual(try OptionValues.every("1"), 1)
        XCTAssertEqual(try OptionValues.seconds("0.5"), 0.5)
        XCTAssertEqual(try OptionValues.input("0"), 0)
        XCTAssertEqual(try OptionValues.input("2147483647"), UInt32(Int32.max))
        let refused: [(String, () throws(OptionValueError) -> Any, String)] = [
            ("-n 0", { () throws(OptionValueError) in try OptionValues.frameCount("0") }, "expected a frame count of at least 1, such as 30"),
            ("-n x", { () throws(OptionValueError) in try OptionValues.frameCount("x") }, "expected a frame count of at least 1, such as 30"),
            ("--buffers 0", { () throws(OptionValueError) in try OptionValues.bufferCount("0") }, "expected a buffer count in 1...32, such as 4"),
            ("--buffers 33", { () throws(OptionValueError) in try OptionValues.bufferCount("33") }, "expected a buffer count in 1...32, such as 4"),
            ("--every 0", { () throws(OptionValueError) in try OptionValues.every("0") }, "expected a whole number of at least 1, such as 10 (a file of every 10th frame)"),
            ("--timeout 0", { () throws(OptionValueError) in try OptionValues.seconds("0") }, "expected a positive number of seconds up to 31536000 (365 days), such as 5 or 0.5"),
            ("--timeout nan", { () throws(OptionValueError) in try OptionValues.seconds("nan") }, "expected a positive number of seconds up to 31536000 (365 days), such as 5 or 0.5"),
            ("--input -1", { () throws(OptionValueError) in try OptionValues.input("-1") }, "expected an input number such as 0 (`framedump info` lists the inputs)"),
            ("--input 2^31", { () throws(OptionValueError) in try OptionValues.input("2147483648") }, "expected an input number such as 0 (`framedump info` lists the inputs)"),
        ]
        for (name, parse, message) in refused {
            XCTAssertEqual(expectOptionValueError(parse)?.message, message, name)
        }
    }

    func testSetControlAcceptsRepeatsAndCommas() throws {
        var controls: [ControlSetting] = []
        for value in ["osd_text_mode=2", "brightness=10,contrast=-3", "hue=0x10"] { controls += try OptionValues.controls(value) }
        XCTAssertEqual(controls, [
            ControlSetting(name: "osd_text_mode", value: 2),
            ControlSetting(name: "brightness", value: 10),
            ControlSetting(name: "contrast", value: -3),
            ControlSetting(name: "hue", value: 16),
        ])
    }

    func testMalformedSetControlShowsAGoodOne() {
        for bad in ["osd_text_mode", "=2", "osd_text_mode=", "osd_text_mode=two", "a=1,,b=2", "a=1,b", "a=--1"] {
            let error = expectOptionValueError { () throws(OptionValueError) in try OptionValues.controls(bad) }
            XCTAssertTrue(error?.message.hasPrefix("malformed") ?? false, "\(bad): \(error?.message ?? "")")
            XCTAssertTrue(error?.message.contains("expected NAME=VALUE such as osd_text_mode=2") ?? false, "\(bad): \(error?.message ?? "")")
        }
    }

    func testDMABufSources() throws {
        XCTAssertEqual(try OptionValues.dmabufSource("vgem"), .vgem(nil))
        XCTAssertEqual(try OptionValues.dmabufSource("VGEM"), .vgem(nil))
        XCTAssertEqual(try OptionValues.dmabufSource("vgem:/dev/dri/card1"), .vgem("/dev/dri/card1"))
        XCTAssertEqual(try OptionValues.dmabufSource("/dev/video1"), .device("/dev/video1"))
        XCTAssertEqual(try OptionValues.dmabufSource("/dev/dri/card1"), .vgem("/dev/dri/card1"))
        XCTAssertEqual(expectOptionValueError { () throws(OptionValueError) in try OptionValues.dmabufSource("vgem:") }?.message,
                       "names no DRM node; expected vgem or vgem:/dev/dri/cardN")
        XCTAssertEqual(expectOptionValueError { () throws(OptionValueError) in try OptionValues.dmabufSource("") }?.message,
                       "empty; expected a V4L2 device such as /dev/video1, or vgem")
    }

    /// The checks across options, made before any device is opened (the device does not exist:
    /// each error must come from the options, not from open).
    func testOptionsAreCheckedBeforeAnyDeviceIsOpened() {
        let device = "/nonexistent/video9"
        let cases: [(CaptureOptions, String)] = [
            (CaptureOptions(devicePath: "", count: 1), "-d: the device path is empty"),
            (CaptureOptions(devicePath: device, count: 1, memory: .dmabuf), "--memory dmabuf needs --dmabuf-from"),
            (CaptureOptions(devicePath: device, count: 1, dmabufSource: .vgem(nil)), "--dmabuf-from vgem is only used with --memory dmabuf"),
            (CaptureOptions(devicePath: device, count: 1, memory: .dmabuf, dmabufSource: .device(device)),
             "--dmabuf-from /nonexistent/video9: the exporter must be another device than -d /nonexistent/video9"),
            (CaptureOptions(devicePath: device, count: 1, outputPath: "/nonexistent-dir/out.raw"), "-o /nonexistent-dir/out.raw: cannot create the file: directory /nonexistent-dir: ENOENT"),
            (CaptureOptions(devicePath: device, count: 1, outputPath: "/tmp"), "-o /tmp: is a directory"),
            (CaptureOptions(devicePath: device, count: 1, container: .y4m), "--container y4m needs -o FILE"),
            (CaptureOptions(devicePath: device, count: 1, pngEvery: 2), "--every needs --png-dir DIR or --jpeg-dir DIR"),
            (CaptureOptions(devicePath: device, count: 1, reconnectTimeoutSeconds: 3), "--reconnect-timeout needs --reconnect"),
        ]
        for (options, expected) in cases {
            let error = expectFrameDumpError { () throws(FrameDumpError) in try options.validate() }
            XCTAssertTrue(error?.message.hasPrefix(expected) ?? false, "expected \(expected), got \(error?.message ?? "nothing")")
            XCTAssertEqual(error?.exitCode, 2, expected)
            XCTAssertFalse(error?.message.contains("\n") ?? true)
        }
        XCTAssertNoThrow(try CaptureOptions(devicePath: device, count: 1, pngDirectory: "/tmp", pngEvery: 5, reconnect: true,
                                            reconnectTimeoutSeconds: 3).validate())
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
