import FrameBridge
import FrameDump
import FrameBridgeTestSupport
import Foundation
import V4L2Simulator
import XCTest

/// `--reconnect` on a simulated device. The host has no /dev/video nodes, so the device never
/// comes back: the reconnect fails after --reconnect-timeout.
final class ReconnectTests: XCTestCase {
    /// A failed reconnect ends the capture with the counts the pin really saw: the statistics
    /// of the unplugged pin are in the summary once (they were added twice).
    func testFailedReconnectCountsThePinsStatisticsOnce() throws {
        let backend = makeBackend()
        var injected = false
        let options = CaptureOptions(devicePath: simulatedPath, backend: backend, count: 20, reconnect: true,
                                     reconnectTimeoutSeconds: 0.3)
        let error = expectFrameDumpError { () throws(FrameDumpError) -> CaptureSummary in
            try runCapture(options) { frames in
                // Three frames skipped and one flagged ERROR after the second, then the unplug.
                if frames == 2 {
                    _ = backend.injectFault(.dropFrames(3), path: simulatedPath)
                    _ = backend.injectFault(.errorFlag, path: simulatedPath)
                }
                if frames == 5, !injected { injected = backend.injectFault(.disconnect, path: simulatedPath) }
            }
        }
        XCTAssertTrue(injected)
        XCTAssertTrue(error?.message.contains("did not come back") == true, error?.message ?? "no error")
        let summary = try XCTUnwrap(error?.summary)
        XCTAssertEqual(summary.framesWritten, 5)
        XCTAssertEqual(summary.framesDropped, 3, "the three frames the driver skipped, once")
        XCTAssertEqual(summary.errorFrames, 1, "the one frame flagged ERROR, once")
        XCTAssertEqual(summary.reconnects, 0)
    }
}
