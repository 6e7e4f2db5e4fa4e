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
    // MARK: - 1, 2: a PNG is right or refused before streaming

    private func format(_ fourcc: String, _ width: UInt32, _ height: UInt32, bytesPerLine: UInt32? = nil, bytesPerPixel: UInt32 = 2,
                        colorspace: UInt32 = 8, encoding: UInt32 = 0, quantization: UInt32 = 0) -> ImageFormat {
        ImageFormat(bufferType: .videoCapture, width: width, height: height, pixelFormat: FourCC(fourcc)!, field: 1,
                    colorspace: colorspace, planes: [PlaneFormat(bytesPerLine: bytesPerLine ?? width * bytesPerPixel, sizeImage: (bytesPerLine ?? width * bytesPerPixel) * height * 2)],
                    ycbcrEncoding: encoding, quantization: quantization)
    }

    /// libswscale converts what libv4lconvert got wrong (odd sizes, real line lengths, BT.709,
    /// full-range YCbCr, limited-range RGB, HSV by its hsv_enc, NV24, AYUV); only what cannot
    /// be right is refused, naming the format and --png-dir.
    func testPNGAcceptsWhatSwscaleConvertsAndRefusesTheRest() {
        let accepted = [
            format("YUYV", 641, 361, bytesPerLine: 1282), format("NV12", 641, 361, bytesPerPixel: 1),
            format("NV12", 640, 360, bytesPerLine: 704), format("UYVY", 640, 360, colorspace: 3),
            format("YUYV", 640, 360, encoding: 2), format("YUYV", 640, 360, quantization: 1),
            format("RGB3", 640, 360, bytesPerPixel: 3, quantization: 2), format("HSV3", 640, 360, bytesPerPixel: 3, encoding: 129),
            format("HSV4", 640, 360, bytesPerPixel: 4, encoding: 128), format("AYUV", 640, 360, bytesPerPixel: 4),
            format("NV24", 640, 360, bytesPerPixel: 1), format("422P", 640, 360, bytesPerPixel: 1), format("NV21", 640, 360, bytesPerPixel: 1),
            format("Y10", 640, 360), format("GREY", 641, 361, bytesPerPixel: 1),
        ]
        for format in accepted {
            XCTAssertNoThrow(try PNGSink.checkFormat(format), "\(format.pixelFormat) \(format.width)x\(format.height)")
        }
        let refused: [(ImageFormat, String)] = [
            (format("HSV3", 640, 360, bytesPerPixel: 3, encoding: 0), "states no HSV encoding"),
            (format("YUYV", 640, 360, encoding: 7), "BT.2020 constant luminance"),
            (format("YUVP", 640, 360), "YUVP frames cannot be converted to a correct PNG"),
            (format("BG10", 640, 360), "BG10 frames cannot be converted to a correct PNG"),
            (format("BA81", 641, 361, bytesPerPixel: 1), "Bayer mosaic needs an even width and height"),
            (format("YUYV", 640, 360, bytesPerLine: 1000), "cannot hold 360 rows of 1280 bytes"),
        ]
        for (format, mention) in refused {
            let error = expectFrameDumpError { () throws(FrameDumpError) in try PNGSink.checkFormat(format) }
            XCTAssertEqual(error?.exitCode, 2, "\(format.pixelFormat)")
            XCTAssertTrue(error?.message.contains(mention) ?? false, "\(format.pixelFormat): \(error?.message ?? "")")
            XCTAssertTrue(error?.message.hasPrefix("--png-dir: ") ?? false, "\(format.pixelFormat): \(error?.message ?? "")")
            XCTAssertTrue(error?.message.contains(format.pixelFormat.description) ?? false, "\(error?.message ?? "")")
        }
    }

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

    /// A driver whose frames are shorter than its format says (found only at frame 0): the
    /// header goes out with the first frame, so nothing is written and no file is left.
    func testY4MFirstFrameShorterThanTheLayoutLeavesNoFile() throws {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/out.y4m"
        var format = FormatOptions()
        format.pixelFormat = .nv12
        format.width = 640
        format.height = 360
        XCTAssertTrue(backend.injectFault(.shortPayload(bytes: 362), path: simulatedPath))
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 2, format: format,
                                          outputPath: path, container: .y4m))
        }
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertTrue(error?.message.hasPrefix("y4m: plane 0 of a NV12 640x360 frame has 345238 bytes") ?? false, error?.message ?? "")
        XCTAssertFalse(fileExists(path), "no header-only file")
        // Without the fault the header and frames are there.
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: makeBackend(), count: 2, format: format,
                                                    outputPath: path, container: .y4m))
        XCTAssertEqual(summary.framesWritten, 2)
        XCTAssertTrue(String(decoding: readFile(path).prefix(9), as: UTF8.self) == "YUV4MPEG2")
        XCTAssertEqual(readFile(path).count, "YUV4MPEG2 W640 H360 F30:1 Ip A1:1 C420jpeg\n".utf8.count + 2 * (6 + 640 * 360 * 3 / 2))
    }

    // MARK: - 5: --libv4l2 takes mmap only

    func testLibV4L2WithUserptrOrDmabufIsAUsageErrorNamingLibV4L2() {
        for memory in ["userptr", "dmabuf"] {
            let options = CaptureOptions(devicePath: simulatedPath, backend: LibV4L2Backend.shared, count: 1,
                                         memory: memory == "dmabuf" ? .dmabuf : .userPointer,
                                         dmabufSource: memory == "dmabuf" ? .vgem(nil) : nil)
            let error = expectFrameDumpError { () throws(FrameDumpError) in try options.validate() }
            XCTAssertEqual(error?.exitCode, 2, memory)
            XCTAssertTrue(error?.message.hasPrefix("--libv4l2 works only with --memory mmap") ?? false, error?.message ?? "")
            let framing = expectFrameDumpError { () throws(FrameDumpError) in
                try FrameDumpCommands.framing(path: simulatedPath, backend: LibV4L2Backend.shared,
                                              memory: memory == "dmabuf" ? .dmabuf : .userPointer)
            }
            XCTAssertEqual(framing?.exitCode, 2, memory)
        }
        XCTAssertNoThrow(try CaptureOptions(devicePath: simulatedPath, backend: LibV4L2Backend.shared, count: 1, memory: .mmap).validate())
    }

    // MARK: - 6: every --buffers count in the range works

    func testEveryBufferCountInTheAdvertisedRangeWorks() throws {
        XCTAssertEqual(AllocatorPlan.bufferRange, 1...32)
        // The simulator's minimum is 3: a smaller count is raised to it, as the driver would.
        let backend = makeBackend(SimulatedDeviceConfiguration(minimumBuffers: 3))
        for buffers in [AllocatorPlan.bufferRange.lowerBound, 2, AllocatorPlan.bufferRange.upperBound] {
            let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 2, buffers: buffers))
            XCTAssertEqual(summary.framesWritten, 2)
            XCTAssertEqual(summary.buffers, max(buffers, 3), "--buffers \(buffers)")
        }
        // The parser of --buffers takes the same range (CommandLineTests: exit 2 naming the option).
        for good in [AllocatorPlan.bufferRange.lowerBound, AllocatorPlan.bufferRange.upperBound] {
            XCTAssertEqual(try OptionValues.bufferCount(String(good)), good)
        }
        for bad in [AllocatorPlan.bufferRange.lowerBound - 1, AllocatorPlan.bufferRange.upperBound + 1] {
            let error = expectOptionValueError { () throws(OptionValueError) in try OptionValues.bufferCount(String(bad)) }
            XCTAssertEqual(error?.message, "expected a buffer count in 1...32, such as 4")
        }
    }

    // MARK: - 7: framing is read-only

    /// While another handle streams, `framing` answers (G_FMT/TRY_FMT and CREATE_BUFS(0)): no
    /// S_FMT, no REQBUFS.
    func testFramingWorksWhileAnotherHandleStreams() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(frameSizes: .webcam))
        let streaming = try VideoDevice(path: simulatedPath, backend: backend)
        let pin = try CapturePin(device: streaming, configuration: PinConfiguration(pixelFormat: .yuyv, width: 640, height: 360))
        try pin.start()
        defer { pin.stop() }
        let setFormats = backend.ioctlCount(path: simulatedPath, request: setFormatRequest)
        let requests = backend.ioctlCount(path: simulatedPath, request: requestBuffersRequest)

        let report = try FrameDumpCommands.framing(path: simulatedPath, backend: backend)
        XCTAssertEqual(report.framing.items.first?.frameSizeMinimum, 640 * 360 * 2)
        XCTAssertEqual(Set(report.framing.memoryKinds), [.mmap, .userPointer, .dmabuf])
        // A format asked for is tried, not set.
        let tried = try FrameDumpCommands.framing(path: simulatedPath, backend: backend,
                                                  format: FormatOptions(pixelFormat: .nv12, width: 320, height: 180))
        XCTAssertEqual(tried.framing.pixelFormat, .nv12)
        XCTAssertEqual(tried.framing.items.first?.frameSizeMinimum, 320 * 180 * 3 / 2)
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: setFormatRequest), setFormats, "no S_FMT")
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: requestBuffersRequest), requests, "no REQBUFS")
        XCTAssertTrue(try pin.advance(timeout: .milliseconds(1000)), "the other handle still streams")
        XCTAssertEqual(try streaming.format(.videoCapture).pixelFormat, .yuyv, "the format in force is unchanged")
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

    // MARK: - 10: no trial REQBUFS

    /// A REQBUFS fault armed before the capture hits the capture's one real REQBUFS: nothing
    /// before it (pin set-up, framing) issues a REQBUFS that would swallow it.
    func testInjectedReqbufsFaultReachesTheRealRequest() throws {
        let backend = makeBackend()
        XCTAssertTrue(backend.injectFault(.failNext(request: requestBuffersRequest, errno: .invalidArgument), path: simulatedPath))
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1))
        }
        XCTAssertTrue(error?.message.contains("VIDIOC_REQBUFS") ?? false, error?.message ?? "")
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: streamOnRequest), 0)
        // Without the fault, pin set-up and framing issue no REQBUFS; start issues one.
        let clean = makeBackend()
        let device = try VideoDevice(path: simulatedPath, backend: clean)
        let pin = try CapturePin(device: device)
        _ = pin.framing
        XCTAssertEqual(clean.ioctlCount(path: simulatedPath, request: requestBuffersRequest), 0)
        try pin.start()
        XCTAssertEqual(clean.ioctlCount(path: simulatedPath, request: requestBuffersRequest), 1)
        pin.stop()
    }
}
