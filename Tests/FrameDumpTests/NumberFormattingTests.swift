@testable import FrameDump
import XCTest

/// How framedump words numbers in its notices and summaries.
final class NumberFormattingTests: XCTestCase {
    /// The --fps notice ("--fps 0.001: the driver set ...") and the summary's "--fps X asked"
    /// print the rate asked for: a slow rate is not rounded to 0 nor to two decimals.
    func testSlowFrameRatesKeepTheirDigits() {
        XCTAssertEqual(FrameDumpFormatting.decimal(0.001), "0.001")
        XCTAssertEqual(FrameDumpFormatting.decimal(0.0001), "0.0001")
        XCTAssertEqual(FrameDumpFormatting.decimal(0.005), "0.005")
        XCTAssertEqual(FrameDumpFormatting.decimal(0.125), "0.125")
        XCTAssertEqual(FrameDumpFormatting.decimal(0.5), "0.5")
        XCTAssertEqual(FrameDumpFormatting.decimal(-0.004), "-0.004")
    }

    func testOtherNumbersKeepTheirFormat() {
        XCTAssertEqual(FrameDumpFormatting.decimal(0), "0")
        XCTAssertEqual(FrameDumpFormatting.decimal(30), "30")
        XCTAssertEqual(FrameDumpFormatting.decimal(29.97), "29.97")
        XCTAssertEqual(FrameDumpFormatting.decimal(30000.0 / 1001.0), "29.97")
        XCTAssertEqual(FrameDumpFormatting.decimal(7.3), "7.3")
        XCTAssertEqual(FrameDumpFormatting.decimal(12.345, digits: 1), "12.3")
        XCTAssertEqual(FrameDumpFormatting.decimal(.nan), "0")
    }
}
