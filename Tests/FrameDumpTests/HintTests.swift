import FrameBridge
import FrameDump
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// The libraries (V4L2, FrameBridge) say what is wrong in V4L2's terms and never name
/// framedump's commands or options; framedump adds its hints when it reports their errors.
final class HintTests: XCTestCase {
    /// A library message: no framedump command, no command-line option, no project tool.
    func assertSaysNothingOfTheCLI(_ message: String, file: StaticString = #filePath, line: UInt = #line) {
        for word in ["framedump", " --", "tools/"] {
            XCTAssertFalse(message.contains(word), "library message mentions \"\(word)\": \(message)", file: file, line: line)
        }
    }

    /// The library's error, then framedump's report of it: the same message with the hint after it.
    func check(_ library: any Error, hint: String, kind: FrameDumpError.Kind, file: StaticString = #filePath, line: UInt = #line) {
        let message = "\(library)"
        assertSaysNothingOfTheCLI(message, file: file, line: line)
        let reported: FrameDumpError
        switch library {
        case let error as V4L2Error: reported = FrameDumpError(error)
        case let error as CaptureError: reported = FrameDumpError(error)
        default: return XCTFail("unexpected \(library)", file: file, line: line)
        }
        XCTAssertEqual(reported.message, "\(message); \(hint)", file: file, line: line)
        XCTAssertEqual(reported.kind, kind, file: file, line: line)
    }

    func catching(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> (any Error)? {
        do {
            try body()
            XCTFail("expected an error", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    func testV4L2ErrorsGetFramedumpsHints() throws {
        let backend = makeBackend()
        let open = try XCTUnwrap(catching { _ = try VideoDevice(path: "/dev/video7", backend: backend) })
        XCTAssertTrue("\(open)".hasPrefix("/dev/video7: open failed: ENOENT"), "\(open)")
        check(open, hint: "`framedump list` shows the video devices", kind: .runtime)

        // /dev/null opens, and answers VIDIOC_QUERYCAP with ENOTTY.
        let notV4L2 = try XCTUnwrap(catching { _ = try VideoDevice(path: "/dev/null", backend: KernelBackend.shared) })
        XCTAssertTrue("\(notV4L2)".contains("VIDIOC_QUERYCAP failed: ENOTTY"), "\(notV4L2)")
        check(notV4L2, hint: "pick a /dev/video* node (`framedump list`)", kind: .runtime)

        let device = try VideoDevice(path: simulatedPath, backend: backend)
        let input = try XCTUnwrap(catching { try device.selectInput(4) })
        XCTAssertTrue("\(input)".contains("input 4 does not exist (VIDIOC_ENUMINPUT lists the inputs)"), "\(input)")
        check(input, hint: "`framedump info -d /dev/video0` lists the inputs", kind: .runtime)

        let mmapOnly = try VideoDevice(path: simulatedPath, backend: makeBackend(SimulatedDeviceConfiguration(memoryKinds: [.mmap])))
        let reqbufs = try XCTUnwrap(catching { _ = try mmapOnly.requestBuffers(count: 2, bufferType: .videoCapture, memory: .userPointer) })
        XCTAssertTrue("\(reqbufs)".contains("may not support userptr memory"), "\(reqbufs)")
        check(reqbufs, hint: "`framedump framing -d /dev/video0` lists the memory kinds", kind: .runtime)
        // Wrapped in a capture error, the device error gets the same hint.
        check(CaptureError(reqbufs as! V4L2Error), hint: "`framedump framing -d /dev/video0` lists the memory kinds", kind: .runtime)

        // An error framedump has nothing to add to stays as it is.
        let busy = V4L2Error(device: simulatedPath, operation: "VIDIOC_STREAMON", errno: .ioError)
        XCTAssertEqual(FrameDumpError(busy).message, busy.description)
    }

    func testCaptureErrorsGetFramedumpsHintsByReason() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: simulatedPath, backend: backend)
        let size = try XCTUnwrap(catching { _ = try CapturePin(device: device, configuration: PinConfiguration(width: 123, height: 45)) })
        XCTAssertEqual((size as? CaptureError)?.reason, .sizeNotSupported)
        check(size, hint: "`framedump info` lists the sizes", kind: .usage)

        let control = try XCTUnwrap(catching { _ = try CapturePin(device: device, configuration: PinConfiguration(controls: [(name: "nope", value: 1)])) })
        XCTAssertEqual((control as? CaptureError)?.reason, .noSuchControl)
        check(control, hint: "`framedump info` lists the controls", kind: .usage)

        var configuration = SimulatedDeviceConfiguration()
        configuration.canCapture = false
        let output = try VideoDevice(path: simulatedPath, backend: makeBackend(configuration))
        let notCapture = try XCTUnwrap(catching { _ = try CapturePin(device: output) })
        XCTAssertEqual((notCapture as? CaptureError)?.reason, .notCaptureDevice)
        check(notCapture, hint: "pick a capture node with `framedump list`", kind: .usage)

        let vgem = try XCTUnwrap(catching { _ = try DRMDumbBufferExporter(path: "/nonexistent/card9").export(count: 1, planeSizes: [4096]) })
        XCTAssertEqual((vgem as? CaptureError)?.reason, .exporterUnavailable)
        XCTAssertTrue("\(vgem)".hasPrefix("/nonexistent/card9: open failed: ENOENT"), "\(vgem)")
        check(vgem, hint: "or name a DRM node with --dmabuf-from vgem:/dev/dri/cardN", kind: .runtime)
    }
}
