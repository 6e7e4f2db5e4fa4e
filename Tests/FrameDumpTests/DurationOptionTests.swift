import FrameBridgeTestSupport
@testable import FrameDump
import Foundation
import V4L2Simulator
import XCTest

/// The options that take seconds (--timeout, --wait-for-signal, --reconnect-timeout): a value
/// too large for a deadline in nanoseconds is a usage error naming the option and the range,
/// and no value that reaches a capture (parsed or built by hand) can trap in a conversion.
final class DurationOptionTests: XCTestCase {
    /// `1e10` s is 1e19 ns, beyond Int64: once a crash (SIGILL, exit 132, no message).
    func testHugeDurationsAreUsageErrorsNamingTheOptionAndTheRange() throws {
        let cases: [(arguments: [String], option: String)] = [
            (["--timeout", "1e10"], "--timeout <SECONDS>"),
            (["--wait-for-signal", "1e12"], "--wait-for-signal <SECONDS>"),
            (["--reconnect", "--reconnect-timeout", "1e15"], "--reconnect-timeout <SECONDS>"),
            (["--timeout", "31536000.5"], "--timeout <SECONDS>"),
        ]
        for (arguments, option) in cases {
            let result = try ChildProcess.run(CommandLineTests.framedump, ["capture", "-d", "/nonexistent/video9", "-n", "1"] + arguments)
            let value = arguments.last!
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("framedump: The value '\(value)' is invalid for '\(option)'"), "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains("up to 31536000"), "\(arguments): the range is named: \(result.stderr)")
            XCTAssertEqual(result.stderr.filter { $0 == "\n" }.count, 1, "one line: \(result.stderr)")
        }
        // The largest value is taken (it gets as far as opening the device).
        let largest = try ChildProcess.run(CommandLineTests.framedump, ["capture", "-d", "/nonexistent/video9", "-n", "1", "--timeout", "31536000"])
        XCTAssertEqual(largest.status, 1, largest.stderr)
        XCTAssertTrue(largest.stderr.contains("/nonexistent/video9"), largest.stderr)
    }

    /// The parser's range: 365 days, the largest value taken.
    func testSecondsRange() throws {
        XCTAssertEqual(try OptionValues.seconds("31536000"), 31_536_000)
        XCTAssertEqual(try OptionValues.seconds("0.5"), 0.5)
        for text in ["1e10", "1e12", "1e15", "31536000.5", "1e308"] {
            let error = expectOptionValueError { () throws(OptionValueError) in try OptionValues.seconds(text) }
            XCTAssertEqual(error?.message, "expected a positive number of seconds up to 31536000 (365 days), such as 5 or 0.5", text)
        }
    }

    /// The conversion to nanoseconds saturates instead of trapping, and so do deadlines.
    func testConversionToNanosecondsSaturates() {
        XCTAssertEqual(Clock.nanoseconds(seconds: 1.5), 1_500_000_000)
        XCTAssertEqual(Clock.nanoseconds(seconds: 0), 0)
        XCTAssertEqual(Clock.nanoseconds(seconds: 1e10), .max)
        XCTAssertEqual(Clock.nanoseconds(seconds: 9.223372036854775807e9), .max, "2^63 ns: one past Int64.max")
        XCTAssertEqual(Clock.nanoseconds(seconds: .infinity), .max)
        XCTAssertEqual(Clock.nanoseconds(seconds: -1e300), .min)
        XCTAssertEqual(Clock.nanoseconds(seconds: .nan), 0)
        XCTAssertEqual(Clock.deadline(1_000, plusSeconds: 1), 1_000_001_000)
        XCTAssertEqual(Clock.deadline(.max - 10, plusSeconds: 1), .max, "overflows in the addition only")
        XCTAssertEqual(Clock.deadline(5, plusSeconds: 1e15), .max)
        XCTAssertEqual(Clock.deadline(-5, plusSeconds: -1e15), .min)
    }

    /// Options built by hand skip the parser: a frame timeout of 1e10 s still captures (it
    /// trapped in `Int64(Double)` on the first wait).
    func testHandBuiltHugeFrameTimeoutDoesNotTrap() throws {
        let backend = makeBackend()
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 3, frameTimeoutSeconds: 1e10))
        XCTAssertEqual(summary.framesWritten, 3)
    }

    /// A reconnect timeout of 1e15 s after an unplug: the wait for the device starts (it
    /// trapped computing its deadline) and a stop ends it.
    func testHandBuiltHugeReconnectTimeoutDoesNotTrap() throws {
        let backend = makeBackend()
        let stop = StopFlag()
        var injected = false
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 10, reconnect: true,
                                                    reconnectTimeoutSeconds: 1e15), stopFlag: stop) { frames in
            if frames == 3, !injected {
                injected = backend.injectFault(.disconnect, path: simulatedPath)
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) { stop.request() }
            }
        }
        XCTAssertTrue(injected)
        XCTAssertEqual(summary.framesWritten, 3)
        XCTAssertTrue(summary.interrupted)
    }
}
