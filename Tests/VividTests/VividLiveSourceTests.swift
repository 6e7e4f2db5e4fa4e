import FrameBridge
import FrameBridgeTestSupport
import SystemPackage
import V4L2
import XCTest

/// vivid's live inputs through the V4L2 layer (issue 13, item 1): input status, DV timings on
/// the HDMI input (3), source-change events with POLLPRI, no signal, analog standards on the
/// TV input (1), and `framedump info` showing them. Uses /dev/video2 and puts input 0 back.
final class VividLiveSourceTests: XCTestCase {
    private let path = Vivid.contiguous

    func testHDMIInputTimingsEventsAndNoSignal() throws {
        let device = try Vivid.open(path)
        defer { try? device.selectInput(0) }
        let inputs = try device.inputs()
        let hdmi = try XCTUnwrap(inputs.first { $0.capabilityFlags.contains(.dvTimings) }, "\(inputs)")
        XCTAssertEqual(hdmi.index, 3)
        try device.selectInput(hdmi.index)
        let capabilities = try device.dvTimingsCapabilities()
        XCTAssertGreaterThanOrEqual(capabilities.maximumWidth, 1920)
        let presets = try device.dvTimingsPresets()
        XCTAssertGreaterThan(presets.count, 10)
        XCTAssertTrue(presets[0].description.hasPrefix("640x480p59"), presets[0].description)
        // vivid's dv_timings control is a menu of its own (not ENUM_DV_TIMINGS' order): pick 1280x720p60 by name.
        let menu = try XCTUnwrap(try device.control(named: "dv_timings")).menuItems
        let p720 = try XCTUnwrap(menu.first { $0.name.hasPrefix("1280x720p60") }, "\(menu.map(\.name))").index

        // A change of the source's timings (another process turning vivid's controls) is a
        // source-change event for input 3, signalled by POLLPRI.
        try device.subscribe(.sourceChange, id: hdmi.index)
        defer { try? device.unsubscribe(.sourceChange, id: hdmi.index) }
        while try device.dequeueEvent() != nil {}
        try Vivid.setControl(device, "dv_timings_signal_mode", 4)
        try Vivid.setControl(device, "dv_timings", Int64(p720))
        let events = try device.poll(events: [.priority], timeoutMilliseconds: 5000)
        XCTAssertTrue(events.contains(.priority), "no POLLPRI after the change: \(events)")
        var changes: [DeviceEvent] = []
        while let event = try device.dequeueEvent() { changes.append(event) }
        let change = try XCTUnwrap(changes.first { $0.kind == .sourceChange }, "\(changes)")
        XCTAssertEqual(change.id, hdmi.index)
        XCTAssertTrue(change.sourceChanges.contains(.resolution))
        let detected = try device.queryDVTimings()
        XCTAssertEqual(detected.width, 1280)
        XCTAssertEqual(detected.height, 720)
        try device.setDVTimings(detected)
        XCTAssertEqual(try device.dvTimings().description, detected.description)

        // No signal: QUERY_DV_TIMINGS says ENOLINK and the input's status says so.
        try Vivid.setControl(device, "dv_timings_signal_mode", 1)
        XCTAssertThrowsError(try device.queryDVTimings()) { error in
            XCTAssertEqual((error as? V4L2Error)?.errno, Errno(rawValue: ENOLINK), "\(error)")
            XCTAssertTrue("\(error)".contains("no signal"), "\(error)")
        }
        XCTAssertTrue(try device.inputs()[Int(hdmi.index)].statusFlags.contains(.noSignal))
        let cli = try ChildProcess.run(VividCLITests.framedump, ["info", "-d", path])
        XCTAssertEqual(cli.status, 0, cli.stderr)
        XCTAssertTrue(cli.text.contains("Live source (current input)"), cli.text)
        XCTAssertTrue(cli.text.contains("Detected timings  : no signal"), cli.text)
        XCTAssertTrue(cli.text.contains("status: no signal"), cli.text)
        print("live source: HDMI presets \(presets.count) (0: \(presets[0])), change event \(change.sourceChanges), detected \(detected), no signal seen by info")
        try Vivid.setControl(device, "dv_timings_signal_mode", 0)
        XCTAssertNoThrow(try device.queryDVTimings())
    }

    func testTVInputStandards() throws {
        let device = try Vivid.open(path)
        defer { try? device.selectInput(0) }
        let tv = try XCTUnwrap(try device.inputs().first { $0.capabilityFlags.contains(.standards) })
        try device.selectInput(tv.index)
        let standards = try device.standards()
        XCTAssertTrue(standards.contains { $0.name.hasPrefix("PAL") }, "\(standards.map(\.name))")
        XCTAssertTrue(standards.contains { $0.name.hasPrefix("NTSC") }, "\(standards.map(\.name))")
        let pal = try XCTUnwrap(standards.first { $0.name == "PAL" || $0.name.hasPrefix("PAL") })
        XCTAssertEqual(pal.frameLines, 625)
        XCTAssertEqual(pal.framesPerSecond, 25, accuracy: 0.01)
        try device.setStandard(pal.id)
        XCTAssertNotEqual(try device.standard() & StandardID.pal, 0)
        let detected = try device.queryStandard()
        let cli = try ChildProcess.run(VividCLITests.framedump, ["info", "-d", path, "--json"])
        XCTAssertEqual(cli.status, 0, cli.stderr)
        XCTAssertTrue(cli.text.contains("\"standards\""), cli.text)
        print("live source: TV input \(tv.index): \(standards.count) standards, set PAL, detected \(StandardID.name(detected))")
    }
}
