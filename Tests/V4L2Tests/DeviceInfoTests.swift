import CV4L2
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// Opening, QUERYCAP, inputs, formats, sizes, intervals and frame rates on the simulator.
final class DeviceInfoTests: XCTestCase {
    func testOpeningAMissingPathFailsWithENOENTNamingThePath() {
        let backend = makeBackend()
        let error = expectError { () throws(V4L2Error) in try VideoDevice(path: "/dev/video7", backend: backend) }
        XCTAssertEqual(error?.device, "/dev/video7")
        XCTAssertEqual(error?.operation, "open")
        XCTAssertEqual(error?.errno, .noSuchFileOrDirectory)
        XCTAssertTrue(error?.description.contains("/dev/video7") ?? false, error?.description ?? "")
        XCTAssertTrue(error?.description.contains("ENOENT") ?? false, error?.description ?? "")
        XCTAssertEqual(backend.openDescriptorCount, 0)
    }

    func testOpeningANonV4L2FileFailsQueryCapWithENOTTYAndClosesIt() {
        let backend = SimulatedV4L2Backend()
        backend.addNonV4L2File(path: "/dev/null0")
        let error = expectError { () throws(V4L2Error) in try VideoDevice(path: "/dev/null0", backend: backend) }
        XCTAssertEqual(error?.operation, "VIDIOC_QUERYCAP")
        XCTAssertEqual(error?.errno, .inappropriateIOCTLForDevice)
        XCTAssertTrue(error?.hint?.contains("not a V4L2 device") ?? false)
        XCTAssertEqual(backend.ioctlCount(path: "/dev/null0", request: CV4L2_VIDIOC_QUERYCAP), 1)
        XCTAssertEqual(backend.openDescriptorCount, 0, "VideoDevice.init must close the descriptor it opened")
    }

    func testNonV4L2FileOpensToARealDescriptorThatAnswersENOTTY() {
        let backend = SimulatedV4L2Backend()
        backend.addNonV4L2File(path: "/tmp/notvideo")
        guard case .success(let fd) = backend.open(path: "/tmp/notvideo", flags: O_RDWR) else { return XCTFail("open failed") }
        XCTAssertGreaterThanOrEqual(fcntl(fd, F_GETFD), 0, "the descriptor must be a real open one")
        var input = v4l2_input()
        XCTAssertEqual(withUnsafeMutablePointer(to: &input) { backend.ioctl(fd, request: CV4L2_VIDIOC_ENUMINPUT, argument: $0) },
                       .inappropriateIOCTLForDevice)
        XCTAssertNil(backend.close(fd))
        XCTAssertLessThan(fcntl(fd, F_GETFD), 0, "close must close the real descriptor")
    }

    func testDescriptorsAreUniqueRealNumbers() throws {
        let backend = makeBackend()
        let first = try VideoDevice(path: videoPath, backend: backend)
        let second = try VideoDevice(path: videoPath, backend: backend)
        XCTAssertNotEqual(first.descriptor, second.descriptor)
        let real = open("/dev/null", O_RDONLY)
        defer { close(real) }
        XCTAssertNotEqual(real, first.descriptor)
        XCTAssertNotEqual(real, second.descriptor)
        XCTAssertEqual(backend.openDescriptorCount(path: videoPath), 2)
        XCTAssertEqual(backend.name, "simulator")
    }

    func testQueryCapReportsTheConfiguredNamesAndASingleplanarCaptureNode() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(driver: "simdrv", card: "Test Card", busInfo: "platform:test-7",
                                                               driverVersion: (6 << 16) | (8 << 8) | 3))
        let device = try VideoDevice(path: videoPath, backend: backend)
        let caps = device.capabilities
        XCTAssertEqual(caps.driver, "simdrv")
        XCTAssertEqual(caps.card, "Test Card")
        XCTAssertEqual(caps.busInfo, "platform:test-7")
        XCTAssertEqual(caps.version, "6.8.3")
        XCTAssertTrue(caps.capabilities.contains(.deviceCaps))
        XCTAssertTrue(caps.deviceCapabilities.contains([.videoCapture, .streaming]))
        XCTAssertFalse(caps.deviceCapabilities.contains(.videoCaptureMultiplanar))
        XCTAssertFalse(caps.deviceCapabilities.contains(.deviceCaps))
        XCTAssertFalse(caps.deviceCapabilities.contains(.readWrite), "the simulator has no read() I/O")
        XCTAssertEqual(caps.captureBufferType, .videoCapture)
    }

    func testQueryCapOfMultiplanarAndOutputOnlyDevices() throws {
        let backend = SimulatedV4L2Backend()
        backend.addDevice(path: "/dev/video1", configuration: SimulatedDeviceConfiguration(multiplanar: true))
        backend.addDevice(path: "/dev/video2", configuration: SimulatedDeviceConfiguration(canCapture: false))
        let mplane = try VideoDevice(path: "/dev/video1", backend: backend)
        XCTAssertEqual(mplane.capabilities.captureBufferType, .videoCaptureMultiplanar)
        XCTAssertFalse(mplane.capabilities.deviceCapabilities.contains(.videoCapture))
        let output = try VideoDevice(path: "/dev/video2", backend: backend)
        XCTAssertFalse(output.capabilities.canCapture)
        XCTAssertNil(output.capabilities.captureBufferType)
        XCTAssertTrue(output.capabilities.deviceCapabilities.contains(.videoOutput))
        XCTAssertEqual(try output.inputs(), [], "an output node has no inputs (ENUMINPUT is ENOTTY)")
        XCTAssertEqual(try output.formats(.videoOutput).first?.pixelFormat, .yuyv)
        XCTAssertEqual(try output.formats(.videoCapture), [])
    }

    func testInputsAreTheFourVividInputs() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let inputs = try device.inputs()
        XCTAssertEqual(inputs.map(\.name), ["Webcam 0", "TV 1", "S-Video 2", "HDMI 3"])
        XCTAssertEqual(inputs.map(\.index), [0, 1, 2, 3])
        XCTAssertEqual(inputs.map(\.typeName), ["camera", "tuner", "camera", "camera"])
        XCTAssertEqual(try device.currentInput(), 0)
        try device.selectInput(3)
        XCTAssertEqual(try device.currentInput(), 3)
    }

    func testSelectingAMissingInputIsEINVALWithAHint() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        let error = expectError { () throws(V4L2Error) in try device.selectInput(4) }
        XCTAssertEqual(error?.operation, "VIDIOC_S_INPUT")
        XCTAssertEqual(error?.errno, .invalidArgument)
        XCTAssertTrue(error?.hint?.contains("input 4 does not exist") ?? false)
        XCTAssertEqual(try device.currentInput(), 0)
    }

    func testSelectingAnotherInputWhileBuffersAreAllocatedIsEBUSY() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.selectInput(1) }?.errno, .resourceBusy)
        try device.selectInput(0) // the current input is fine
        try device.requestBuffers(count: 0, bufferType: .videoCapture, memory: .mmap)
        try device.selectInput(1)
        XCTAssertEqual(try device.currentInput(), 1)
    }

    func testFormatsOfSingleAndMultiplanarDevices() throws {
        let backend = SimulatedV4L2Backend()
        backend.addDevice(path: "/dev/video0", configuration: SimulatedDeviceConfiguration())
        backend.addDevice(path: "/dev/video1", configuration: SimulatedDeviceConfiguration(multiplanar: true))
        let single = try VideoDevice(path: "/dev/video0", backend: backend)
        let formats = try single.formats(.videoCapture)
        XCTAssertEqual(formats.map(\.pixelFormat), [.yuyv, .rgb24, .nv12])
        XCTAssertEqual(formats.map(\.description), ["YUYV 4:2:2", "24-bit RGB 8-8-8", "Y/UV 4:2:0"])
        XCTAssertEqual(try single.formats(.videoCaptureMultiplanar), [], "the wrong queue type is EINVAL")
        let multi = try VideoDevice(path: "/dev/video1", backend: backend)
        XCTAssertEqual(try multi.formats(.videoCaptureMultiplanar).map(\.pixelFormat), [.yuyv, .rgb24, .nv12, .nv12m])
        XCTAssertEqual(try multi.formats(.videoCapture), [])
    }

    func testFrameSizesAndIntervals() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let sizes = try device.frameSizes(.yuyv)
        XCTAssertTrue(sizes.contains(.discrete(width: 640, height: 360)))
        XCTAssertTrue(sizes.contains(.discrete(width: 1280, height: 720)))
        XCTAssertEqual(sizes.count, 5)
        XCTAssertEqual(try device.frameSizes(.mjpeg), [], "an unoffered format has no sizes")
        XCTAssertEqual(try device.frameIntervals(.yuyv, width: 1280, height: 720),
                       [.discrete(Fraction(1, 30)), .discrete(Fraction(1, 60))])
        XCTAssertEqual(try device.frameIntervals(.yuyv, width: 1281, height: 720), [], "an unoffered size has no intervals")
    }

    func testStepwiseFrameSizesAndRounding() throws {
        let configuration = SimulatedDeviceConfiguration(frameSizes: .stepwise(minWidth: 64, maxWidth: 1920, stepWidth: 16,
                                                                                minHeight: 48, maxHeight: 1080, stepHeight: 8))
        let device = try VideoDevice(path: videoPath, backend: makeBackend(configuration))
        XCTAssertEqual(try device.frameSizes(.nv12),
                       [.stepwise(minWidth: 64, maxWidth: 1920, stepWidth: 16, minHeight: 48, maxHeight: 1080, stepHeight: 8)])
        let tried = try device.tryFormat(ImageFormat(bufferType: .videoCapture, width: 1001, height: 5000, pixelFormat: .nv12))
        XCTAssertEqual(tried.width, 1008)
        XCTAssertEqual(tried.height, 1080)
        let small = try device.tryFormat(ImageFormat(bufferType: .videoCapture, width: 1, height: 1, pixelFormat: .nv12))
        XCTAssertEqual([small.width, small.height], [64, 48])
        XCTAssertEqual(try device.frameIntervals(.nv12, width: 80, height: 56).count, 2)
        XCTAssertEqual(try device.frameIntervals(.nv12, width: 81, height: 56), [])
    }

    func testGetFormatGivesTheInitialFormat() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let format = try device.format(.videoCapture)
        XCTAssertEqual(format.pixelFormat, .yuyv)
        XCTAssertEqual([format.width, format.height], [640, 360])
        XCTAssertEqual(format.planes, [PlaneFormat(bytesPerLine: 1280, sizeImage: 1280 * 360)])
        XCTAssertEqual(format.field, 1)
        XCTAssertEqual(format.colorspace, 8)
    }

    func testSetFormatChoosesTheNearestSizeAndComputesTheLayout() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let set = try device.setFormat(ImageFormat(bufferType: .videoCapture, width: 1280, height: 720, pixelFormat: .nv12))
        XCTAssertEqual(set.pixelFormat, .nv12)
        XCTAssertEqual(set.planes, [PlaneFormat(bytesPerLine: 1280, sizeImage: 1280 * 720 * 3 / 2)])
        XCTAssertEqual(try device.format(.videoCapture), set)
        let rgb = try device.setFormat(ImageFormat(bufferType: .videoCapture, width: 1000, height: 600, pixelFormat: .rgb24))
        XCTAssertEqual([rgb.width, rgb.height], [1280, 720], "1280x720 is nearest to 1000x600")
        XCTAssertEqual(rgb.planes, [PlaneFormat(bytesPerLine: 3840, sizeImage: 3840 * 720)])
    }

    func testTryFormatDoesNotChangeTheFormatAndReplacesUnknownPixelFormats() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let tried = try device.tryFormat(ImageFormat(bufferType: .videoCapture, width: 320, height: 180, pixelFormat: FourCC("ABCD")!))
        XCTAssertEqual(tried.pixelFormat, .yuyv)
        XCTAssertEqual([tried.width, tried.height], [320, 180])
        XCTAssertEqual(try device.format(.videoCapture).width, 640)
    }

    func testFormatCallsWithTheWrongBufferTypeAreEINVAL() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let error = expectError { () throws(V4L2Error) in
            try device.setFormat(ImageFormat(bufferType: .videoCaptureMultiplanar, width: 640, height: 360, pixelFormat: .yuyv))
        }
        XCTAssertEqual(error?.errno, .invalidArgument)
        XCTAssertEqual(error?.operation, "VIDIOC_S_FMT")
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.format(.videoOutput) }?.errno, .invalidArgument)
    }

    func testMultiplanarFormatsHaveOnePlanePerBufferAndTheDataOffsetInPlaneZero() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128))
        let device = try VideoDevice(path: videoPath, backend: backend)
        let nm12 = try device.setFormat(ImageFormat(bufferType: .videoCaptureMultiplanar, width: 1280, height: 720, pixelFormat: .nv12m))
        XCTAssertEqual(nm12.pixelFormat, .nv12m)
        XCTAssertEqual(nm12.planes, [PlaneFormat(bytesPerLine: 1280, sizeImage: 1280 * 720 + 128),
                                     PlaneFormat(bytesPerLine: 1280, sizeImage: 1280 * 360)])
        let yuyv = try device.tryFormat(ImageFormat(bufferType: .videoCaptureMultiplanar, width: 640, height: 360, pixelFormat: .yuyv))
        XCTAssertEqual(yuyv.planes, [PlaneFormat(bytesPerLine: 1280, sizeImage: 1280 * 360 + 128)])
        XCTAssertEqual(try device.format(.videoCaptureMultiplanar), nm12)
        XCTAssertEqual(backend.queueState(path: videoPath)?.format, nm12)
    }

    func testFrameIntervalGetAndSetPicksTheNearestOffered() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        XCTAssertEqual(try device.frameInterval(.videoCapture), Fraction(1, 30))
        XCTAssertEqual(try device.setFrameInterval(Fraction(1, 60), .videoCapture), Fraction(1, 60))
        XCTAssertEqual(try device.frameInterval(.videoCapture), Fraction(1, 60))
        XCTAssertEqual(try device.setFrameInterval(Fraction(1, 25), .videoCapture), Fraction(1, 30))
        XCTAssertEqual(try device.setFrameInterval(Fraction(0, 0), .videoCapture), Fraction(1, 30), "0/0 resets to the default")
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.frameInterval(.videoOutput) }?.errno, .invalidArgument)
    }

    func testUnknownIoctlIsENOTTYAndCallsAreCounted() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        var dummy: UInt64 = 0
        XCTAssertEqual(device.raw(0xdead_beef, &dummy), .inappropriateIOCTLForDevice)
        _ = try device.formats(.videoCapture)
        XCTAssertEqual(backend.ioctlCount(path: videoPath, request: CV4L2_VIDIOC_ENUM_FMT), 4, "3 formats and the EINVAL that ends the list")
        XCTAssertEqual(backend.ioctlCount(path: videoPath, request: CV4L2_VIDIOC_QUERYCAP), 1)
        XCTAssertEqual(backend.ioctlCounts(path: videoPath)["VIDIOC_ENUM_FMT"], 4)
        backend.resetCounters(path: videoPath)
        XCTAssertEqual(backend.ioctlCount(path: videoPath, request: CV4L2_VIDIOC_ENUM_FMT), 0)
    }
}
