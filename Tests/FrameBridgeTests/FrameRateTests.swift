import CV4L2
import FrameBridge
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// The frame rate a pin asks for: a rate outside what a V4L2 frame interval can say is a
/// configuration error before any VIDIOC_S_PARM, not a zero denominator or a trap.
final class FrameRateTests: XCTestCase {
    let path = "/dev/video0"

    func pinError(framesPerSecond: Double, _ backend: SimulatedV4L2Backend) throws -> CaptureError? {
        let device = try VideoDevice(path: path, backend: backend)
        return expectCaptureError { () throws(CaptureError) in
            _ = try CapturePin(device: device, configuration: PinConfiguration(framesPerSecond: framesPerSecond))
        }
    }

    /// 0.0001 fps once became `Fraction(1000, 0)`: the driver took its fastest rate.
    func testATooSlowRateIsAConfigurationErrorAndNoS_PARMIsSent() throws {
        let backend = SimulatedV4L2Backend(path: path)
        let error = try XCTUnwrap(try pinError(framesPerSecond: 0.0001, backend))
        XCTAssertEqual(error.kind, .invalidConfiguration)
        XCTAssertTrue(error.message.contains("0.0001"), error.message)
        XCTAssertTrue(error.message.contains("0.001"), "names the range: \(error.message)")
        XCTAssertEqual(backend.ioctlCount(path: path, request: CV4L2_VIDIOC_S_PARM), 0)
    }

    /// 5e6 fps once trapped converting 5e9 to UInt32.
    func testATooFastRateIsAConfigurationErrorNotATrap() throws {
        let backend = SimulatedV4L2Backend(path: path)
        let error = try XCTUnwrap(try pinError(framesPerSecond: 5e6, backend))
        XCTAssertEqual(error.kind, .invalidConfiguration)
        XCTAssertEqual(backend.ioctlCount(path: path, request: CV4L2_VIDIOC_S_PARM), 0)
    }

    func testNTSCRateReachesTheDriverAsItsExactInterval() throws {
        let backend = SimulatedV4L2Backend(path: path, configuration: SimulatedDeviceConfiguration(
            frameIntervals: [Fraction(1, 30), Fraction(1001, 30000), Fraction(1, 60)]))
        let device = try VideoDevice(path: path, backend: backend)
        let pin = try CapturePin(device: device, configuration: PinConfiguration(framesPerSecond: 29.97))
        XCTAssertEqual(pin.frameInterval, Fraction(1001, 30000))
    }
}
