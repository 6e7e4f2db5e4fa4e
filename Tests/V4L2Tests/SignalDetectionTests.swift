import SystemPackage
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// ``SignalDetection``: the one classification of "no usable signal".
final class SignalDetectionTests: XCTestCase {
    private func queryFailure(_ errno: Int32, operation: String = "VIDIOC_QUERY_DV_TIMINGS") -> V4L2Error {
        V4L2Error(device: "/dev/video0", operation: operation, errno: Errno(rawValue: errno))
    }

    func testQueryDVTimingsErrnos() {
        for errno in [ENOLINK, ENOLCK, ERANGE] {
            XCTAssertTrue(SignalDetection.isSignalLoss(queryFailure(errno)), "\(errno)")
        }
        for errno in [EINVAL, ENOTTY, EIO, ENODEV, EBUSY] {
            XCTAssertFalse(SignalDetection.isSignalLoss(queryFailure(errno)), "\(errno): a failure, not a lost signal")
        }
        XCTAssertFalse(SignalDetection.isSignalLoss(queryFailure(ENOLINK, operation: "VIDIOC_S_FMT")), "only QUERY_DV_TIMINGS says it so")
        XCTAssertFalse(SignalDetection.isSignalLoss(V4L2Error(device: "/dev/video0", operation: "VIDIOC_QUERY_DV_TIMINGS", errno: nil)))
    }

    func testStatusAndStandard() {
        XCTAssertTrue(SignalDetection.isSignalLoss(status: [.noSignal]))
        XCTAssertTrue(SignalDetection.isSignalLoss(status: [.noSignal, .noColor]))
        XCTAssertFalse(SignalDetection.isSignalLoss(status: []))
        XCTAssertFalse(SignalDetection.isSignalLoss(status: [.noColor]))
        XCTAssertTrue(SignalDetection.isSignalLoss(detectedStandard: 0))
        XCTAssertFalse(SignalDetection.isSignalLoss(detectedStandard: 0xB000))
    }
}
