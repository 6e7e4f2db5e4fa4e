import SystemPackage
import CV4L2
import FrameBridge
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// CaptureError and V4L2Error messages name the device path and the ioctl (and the errno).
final class ErrorMessageTests: XCTestCase {
    func testFailedIoctlAtStartNamesDeviceIoctlAndErrno() throws {
        let cases: [(request: UInt, name: String, errno: Errno)] = [
            (CV4L2_VIDIOC_REQBUFS, "VIDIOC_REQBUFS", .resourceBusy),
            (CV4L2_VIDIOC_QBUF, "VIDIOC_QBUF", .noMemory),
            (CV4L2_VIDIOC_STREAMON, "VIDIOC_STREAMON", .ioError),
            (CV4L2_VIDIOC_QUERYBUF, "VIDIOC_QUERYBUF", .invalidArgument),
        ]
        for (request, name, errno) in cases {
            let rig = try SimRig(.singlePlanar)
            rig.inject(.failNext(request: request, errno: errno))
            let error = try XCTUnwrap(expectCaptureError { () throws(CaptureError) in try rig.pin.start() })
            XCTAssertEqual(error.kind, .device, name)
            let underlying = try XCTUnwrap(error.underlying, name)
            XCTAssertEqual(underlying.device, capturePath)
            XCTAssertEqual(underlying.operation, name)
            XCTAssertEqual(underlying.errno, errno)
            XCTAssertTrue(error.message.hasPrefix("\(capturePath): \(name) failed: \(errno.name) ("), error.message)
            XCTAssertEqual(error.description, error.message)
            XCTAssertEqual("\(error)", underlying.description)
            rig.assertTornDown(name)
        }
    }

    func testV4L2ErrorDescriptionAndHints() {
        let busy = V4L2Error(device: "/dev/video7", operation: "VIDIOC_REQBUFS", errno: .resourceBusy)
        XCTAssertTrue(busy.description.hasPrefix("/dev/video7: VIDIOC_REQBUFS failed: EBUSY ("), busy.description)
        XCTAssertTrue(busy.description.contains("; the device is in use"), busy.description)
        let gone = V4L2Error(device: "/dev/video7", operation: "VIDIOC_DQBUF", errno: .noSuchDevice)
        XCTAssertTrue(gone.description.contains("disconnected"), gone.description)
        XCTAssertEqual(CaptureError(gone).kind, .disconnected, "ENODEV is a disconnect")
        XCTAssertEqual(CaptureError(busy).kind, .device)
        XCTAssertEqual(CaptureError(busy).message, busy.description)
        let detected = V4L2Error(device: "/dev/video7", operation: "poll", errno: nil, detail: "POLLERR")
        XCTAssertEqual(detected.description, "/dev/video7: poll failed: POLLERR")
    }

    func testStreamingFailuresNameDeviceAndCall() throws {
        let fatal = try SimRig(.multiPlanar)
        try fatal.pin.start()
        fatal.inject(.fatalError)
        let fatalError = try XCTUnwrap(expectCaptureError { () throws(CaptureError) in try fatal.pin.advance(timeout: .milliseconds(1000)) })
        XCTAssertEqual(fatalError.kind, .fatalStreamingError)
        XCTAssertTrue(fatalError.message.contains(capturePath), fatalError.message)
        XCTAssertTrue(fatalError.message.contains("VIDIOC_DQBUF: EIO"), fatalError.message)
        XCTAssertEqual(fatalError.underlying?.operation, "VIDIOC_DQBUF")

        let gone = try SimRig(.singlePlanar)
        try gone.pin.start()
        gone.inject(.disconnect)
        let disconnected = try XCTUnwrap(expectCaptureError { () throws(CaptureError) in try gone.pin.advance(timeout: .milliseconds(1000)) })
        XCTAssertEqual(disconnected.kind, .disconnected)
        XCTAssertTrue(disconnected.message.contains(capturePath), disconnected.message)
        XCTAssertTrue(disconnected.message.contains("VIDIOC_DQBUF: ENODEV"), disconnected.message)
        XCTAssertEqual(disconnected.underlying?.device, capturePath)
        gone.pin.stop()
    }

    func testStateAndConfigurationErrorsNameTheDevice() throws {
        let rig = try SimRig(.singlePlanar)
        let notStarted = try XCTUnwrap(expectCaptureError { () throws(CaptureError) in try rig.pin.advance(timeout: .milliseconds(10)) })
        XCTAssertEqual(notStarted.kind, .invalidState)
        XCTAssertTrue(notStarted.message.hasPrefix("\(capturePath): "), notStarted.message)
        XCTAssertTrue(notStarted.message.contains("start()"), notStarted.message)

        try rig.pin.start()
        let again = try XCTUnwrap(expectCaptureError { () throws(CaptureError) in try rig.pin.start() })
        XCTAssertTrue(again.message.hasPrefix("\(capturePath): "), again.message)
        var pointer = try unwrapPointer(try rig.pin.next())
        rig.pin.stop()
        XCTAssertThrowsError(try pointer.lock()) { error in
            XCTAssertEqual("\(error)", "\(capturePath): the frame was cancelled: streaming was stopped (VIDIOC_STREAMOFF)")
        }
        XCTAssertFalse(pointer.isLocked, "a failed lock leaves the pointer unlocked (withPayload would trap)")
        _ = consume pointer

        let backend = SimulatedV4L2Backend()
        backend.addDevice(path: capturePath, configuration: Layout.singlePlanar.deviceConfiguration())
        let device = try VideoDevice(path: capturePath, backend: backend)
        XCTAssertThrowsError(try CapturePin(device: device, configuration: PinConfiguration(pixelFormat: FourCC("ZZZZ")!))) { error in
            XCTAssertEqual((error as? CaptureError)?.kind, .invalidConfiguration)
            XCTAssertTrue("\(error)".hasPrefix("\(capturePath): pixel format ZZZZ is not offered"), "\(error)")
        }
        XCTAssertThrowsError(try CapturePin(device: device, configuration: PinConfiguration(width: 333, height: 111))) { error in
            XCTAssertTrue("\(error)".contains(capturePath) && "\(error)".contains("VIDIOC_S_FMT") && "\(error)".contains("333x111"), "\(error)")
        }
        XCTAssertThrowsError(try CapturePin(device: device, configuration: PinConfiguration(input: 9))) { error in
            XCTAssertTrue("\(error)".contains(capturePath) && "\(error)".contains("VIDIOC_S_INPUT"), "\(error)")
        }
    }

    func testOpenAndExporterErrorsNameThePath() throws {
        let rig = try SimRig(.singlePlanar)
        XCTAssertThrowsError(try VideoDevice(path: "/dev/video9", backend: rig.backend)) { error in
            XCTAssertTrue("\(error)".hasPrefix("/dev/video9: open failed: ENOENT"), "\(error)")
        }
        let missing = DMABufAllocator(exporter: V4L2BufferExporter(path: "/dev/video9", backend: rig.backend))
        let error = try XCTUnwrap(expectCaptureError { () throws(CaptureError) in
            try rig.pin.start(AllocatorSelection(candidates: [missing], consumer: ConsumerRequirements(acceptsDeviceMemory: true)))
        })
        XCTAssertEqual(error.kind, .allocator)
        XCTAssertTrue(error.message.contains("/dev/video9: open failed"), error.message)
        XCTAssertEqual(error.underlying?.device, "/dev/video9")
        rig.assertTornDown("after the exporter failed")
    }

    func testADeviceWithoutCaptureIsRefusedByName() throws {
        let backend = SimulatedV4L2Backend()
        var configuration = Layout.singlePlanar.deviceConfiguration()
        configuration.canCapture = false
        backend.addDevice(path: "/dev/video3", configuration: configuration)
        let device = try VideoDevice(path: "/dev/video3", backend: backend)
        XCTAssertThrowsError(try CapturePin(device: device)) { error in
            XCTAssertEqual((error as? CaptureError)?.kind, .invalidConfiguration)
            XCTAssertTrue("\(error)".hasPrefix("/dev/video3: not a video capture device"), "\(error)")
        }
    }
}
