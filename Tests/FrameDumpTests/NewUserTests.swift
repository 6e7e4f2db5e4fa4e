import FrameBridge
import FrameDump
import Foundation
import V4L2
import V4L2Simulator
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// VIDIOC_S_FMT = _IOWR('V', 5, struct v4l2_format).
let setFormatRequest: UInt = 0xC0D0_5605

/// Issue 16: what a new user hit. One test (or more) per item, each failing before its fix.
final class NewUserTests: XCTestCase {
    // MARK: - 3: a PNG is whole or absent

    /// A write that fails part-way (RLIMIT_FSIZE stands in for a full disk: the same short
    /// write, EFBIG instead of ENOSPC) leaves neither the picture nor its temporary file.
    func testPNGThatCannotBeWrittenLeavesNoFile() throws {
        let directory = makeTemporaryDirectory(self) + "/pictures"
        var format = FormatOptions()
        format.width = 320
        format.height = 180
        let options = CaptureOptions(devicePath: simulatedPath, backend: makeBackend(), count: 2, format: format,
                                     pngDirectory: directory)
        var saved = rlimit()
        XCTAssertEqual(getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved), 0)
        let previousHandler = signal(SIGXFSZ, SIG_IGN)
        // The limit comes after the first picture (the buffers, memfds in the simulator, are
        // made before streaming and must not hit it).
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(options, afterFrame: { written in
                guard written == 1 else { return }
                var limit = saved
                limit.rlim_cur = 1000
                setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit)
            })
        }
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved), 0)
        signal(SIGXFSZ, previousHandler)
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertTrue(error?.message.contains("frame-000001.png") ?? false, error?.message ?? "")
        XCTAssertTrue(error?.message.contains("File too large") ?? false, "the errno is named: \(error?.message ?? "")")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        XCTAssertEqual(names, ["frame-000000.png"], "no partial picture and no temporary file is left")
        XCTAssertGreaterThan(readFile(directory + "/frame-000000.png").count, 1000, "the first picture is whole")
    }

    // MARK: - 4: a y4m layout that cannot hold the picture fails before streaming

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

    // MARK: - 8: --set-ctrl on a string control

    func testSetControlOnAStringControlNamesItAndItsType() throws {
        let backend = makeBackend()
        let options = CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1,
                                     format: FormatOptions(controls: [ControlSetting(name: "string", value: 1)]))
        let error = expectFrameDumpError { () throws(FrameDumpError) in try runCapture(options) }
        XCTAssertEqual(error?.exitCode, 2)
        XCTAssertEqual(error?.message, "--set-ctrl: control string of /dev/video0 is a str control; framedump sets only integer, boolean, menu, bitmask and button controls (v4l2-ctl --set-ctrl sets str controls)")
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: streamOnRequest), 0)
        // The library says the same without the CLI's check.
        let device = try VideoDevice(path: simulatedPath, backend: backend)
        XCTAssertThrowsError(try CapturePin(device: device, configuration: PinConfiguration(controls: [(name: "string", value: 1)]))) { error in
            XCTAssertTrue("\(error)".contains("control string is a str control"), "\(error)")
        }
    }

    // MARK: - 9: fourcc names that can be typed

    func testBigEndianAndUnprintableFourCCsUseV4L2CtlSpellingAndReadBack() throws {
        let y16BE = FourCC(rawValue: 0x2036_3159 | FourCC.bigEndianFlag)
        XCTAssertEqual(y16BE.description, "Y16 -BE")
        XCTAssertEqual(FourCC(rawValue: 0x3531_5258 | FourCC.bigEndianFlag).description, "XR15-BE")
        XCTAssertEqual(try ArgumentParsing.fourCC("Y16 -BE"), y16BE)
        XCTAssertEqual(try ArgumentParsing.fourCC("Y16-BE"), y16BE)
        XCTAssertEqual(try ArgumentParsing.fourCC("0x20363159"), FourCC("Y16"))
        XCTAssertEqual(try ArgumentParsing.fourCC("0xa0363159"), y16BE)
        let odd = FourCC(rawValue: 0x0102_4142)
        XCTAssertEqual(odd.description, "0x01024142")
        XCTAssertEqual(FourCC(odd.description), odd)
        // JSON carries the same spelling and reads back.
        let data = try JSONEncoder().encode([y16BE, odd, .yuyv])
        XCTAssertEqual(String(decoding: data, as: UTF8.self), #"["Y16 -BE","0x01024142","YUYV"]"#)
        XCTAssertEqual(try JSONDecoder().decode([FourCC].self, from: data), [y16BE, odd, .yuyv])
    }
}
