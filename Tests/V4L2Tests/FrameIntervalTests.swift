import V4L2
import XCTest

/// Frames per second as a V4L2 frame interval: exact for the rates people use, nil where no
/// interval says the rate.
final class FrameIntervalTests: XCTestCase {
    func testCommonRatesAreExact() {
        let cases: [(Double, Fraction)] = [
            (30, Fraction(1, 30)), (25, Fraction(1, 25)), (60, Fraction(1, 60)), (1, Fraction(1, 1)),
            (29.97, Fraction(1001, 30000)), (30000.0 / 1001.0, Fraction(1001, 30000)),
            (59.94, Fraction(1001, 60000)), (60000.0 / 1001.0, Fraction(1001, 60000)),
            (23.976, Fraction(1001, 24000)), (24000.0 / 1001.0, Fraction(1001, 24000)),
            (119.88, Fraction(1001, 120000)), (14.985, Fraction(1001, 15000)),
            (0.5, Fraction(2, 1)), (0.25, Fraction(4, 1)), (0.001, Fraction(1000, 1)),
            (12.5, Fraction(2, 25)), (7.5, Fraction(2, 15)), (0.3, Fraction(10, 3)), (7.3, Fraction(10, 73)),
            (1_000_000, Fraction(1, 1_000_000)),
        ]
        for (fps, interval) in cases {
            XCTAssertEqual(Fraction(framesPerSecond: fps), interval, "\(fps)")
        }
    }

    func testAnyRateInTheRangeHasANearbyInterval() {
        for fps in [0.0013, 0.7, 3.14159, 33.333, 99.9, 144.1, 999.99, 12345.6, 999_999.5] {
            guard let interval = Fraction(framesPerSecond: fps) else { XCTFail("\(fps)"); continue }
            XCTAssertGreaterThan(interval.denominator, 0)
            XCTAssertEqual(interval.framesPerSecond, fps, accuracy: fps * 1e-5, "\(fps): \(interval)")
        }
    }

    /// 0.0001 fps once became 1000/0 (the driver's fastest rate) and 5e6 fps a trap.
    func testRatesOutsideTheRangeHaveNoInterval() {
        for fps in [0, -30, 0.0009, 0.0001, 1e-300, 1_000_000.5, 5e6, 4.3e9, 1e300, .infinity, -.infinity, .nan] {
            XCTAssertNil(Fraction(framesPerSecond: fps), "\(fps)")
        }
        XCTAssertEqual(Fraction.framesPerSecondRange, 0.001...1_000_000)
    }
}
