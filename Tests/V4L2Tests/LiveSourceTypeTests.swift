import V4L2
import XCTest

/// The live-source types' arithmetic and names (the ioctls themselves run against vivid in
/// VividLiveSourceTests).
final class LiveSourceTypeTests: XCTestCase {
    func testInputStatusNamesAndStandardNames() {
        XCTAssertEqual(InputStatus([.noSignal, .noSync]).names, ["no signal", "no sync"])
        XCTAssertEqual(InputStatus(rawValue: 0x8000_0000).names, ["0x80000000"])
        XCTAssertEqual(InputStatus().names, [])
        XCTAssertEqual(StandardID.name(0x0000_00FF), "PAL")
        XCTAssertEqual(StandardID.name(0x0000_1000), "NTSC")
        XCTAssertEqual(StandardID.name(0), "none")
    }
}
