import FrameBridge
import FrameBridgeTestSupport
import Foundation
import V4L2
import XCTest

/// Interlaced capture from vivid's TV input (issue 13, item 3): `--field interlaced` gives a
/// y4m that ffprobe reads as interlaced, with the field order of the standard (top first for
/// PAL, bottom first for NTSC) and its frame rate; the summary names the field in force; field
/// alternate, which y4m cannot carry, is refused before anything is written.
final class VividFieldTests: XCTestCase {
    private let path = Vivid.contiguous

    func testInterlacedY4MFromTheTVInput() throws {
        let device = try Vivid.open(path)
        defer { try? device.selectInput(0) }
        let tv = try XCTUnwrap(try device.inputs().first { $0.capabilityFlags.contains(.standards) })
        try device.selectInput(tv.index)
        let standards = try device.standards()
        let work = NSTemporaryDirectory() + "framedump-field-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        for (name, order, rate, height) in [("PAL", "tt", "25/1", 576), ("NTSC", "bb", "30000/1001", 480)] {
            let standard = try XCTUnwrap(standards.first { $0.name == name || $0.name == name + "-M" }, "\(standards.map(\.name))")
            try device.setStandard(standard.id)
            let output = "\(work)/\(name).y4m"
            let capture = try ChildProcess.run(VividCLITests.framedump, ["capture", "-d", path, "--input", "\(tv.index)", "--field", "interlaced",
                                                                          "--container", "y4m", "-n", "6", "-o", output, "--json", "--quiet"])
            XCTAssertEqual(capture.status, 0, "\(name): \(capture.stderr)")
            let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: capture.stdout) as? [String: Any], capture.text)
            XCTAssertEqual(summary["field"] as? String, "interlaced", "\(name): \(capture.text)")
            let probe = try ChildProcess.run("/usr/bin/ffprobe", ["-v", "error", "-select_streams", "v:0", "-show_entries",
                                                                 "stream=field_order,r_frame_rate,height", "-of", "default=nw=1", output])
            XCTAssertEqual(probe.status, 0, probe.stderr)
            XCTAssertTrue(probe.text.contains("field_order=\(order)"), "\(name): \(probe.text)")
            XCTAssertTrue(probe.text.contains("r_frame_rate=\(rate)"), "\(name): \(probe.text)")
            XCTAssertTrue(probe.text.contains("height=\(height)"), "\(name): \(probe.text)")
            print("field: \(name) --field interlaced: ffprobe \(probe.text.split(separator: "\n").joined(separator: ", "))")
        }
        // Fields one per buffer have no y4m form: a usage error naming --field, and no file.
        let refused = "\(work)/alternate.y4m"
        let alternate = try ChildProcess.run(VividCLITests.framedump, ["capture", "-d", path, "--input", "\(tv.index)", "--field", "alternate",
                                                                        "--container", "y4m", "-n", "2", "-o", refused])
        XCTAssertEqual(alternate.status, 2, alternate.stderr)
        XCTAssertTrue(alternate.stderr.contains("--field interlaced"), alternate.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: refused) && ((try? FileManager.default.attributesOfItem(atPath: refused)[.size] as? Int) ?? 0) > 0,
                       "nothing written for a refused field order")
    }
}
