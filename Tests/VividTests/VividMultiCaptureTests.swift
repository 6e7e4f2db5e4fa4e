import Foundation
import FrameBridge
import FrameBridgeTestSupport
import V4L2
import XCTest

/// `framedump capture` from several vivid devices in one process (issue 15): every device's
/// frames in its own `{n}` file, per-device options, the devices array and the skew in the
/// JSON summary, and one device's fatal error ending only its stream (or, with
/// --all-or-nothing, every stream). Uses /dev/video0, 1 and 2 at input 0.
final class VividMultiCaptureTests: XCTestCase {
    private let devices = [Vivid.main, Vivid.exporter, Vivid.contiguous]
    private let work = "/tmp/framedump-multi-tests"
    private let frameSize = 640 * 360 * 2

    override func setUpWithError() throws {
        for path in devices { _ = try Vivid.open(path) }
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    private func arguments(count: Int) -> [String] {
        ["capture"] + devices.flatMap { ["-d", $0] } + ["--input", "0", "--pixel-format", "YUYV", "--size", "640x360", "--fps", "30",
                                                          "--set-ctrl", "osd_text_mode=2", "-n", String(count), "-o", "\(work)/cam{n}.raw",
                                                          "--json", "--quiet"]
    }

    private func summary(_ run: ChildProcess.Result) throws -> (top: [String: Any], devices: [[String: Any]]) {
        let top = try XCTUnwrap(try JSONSerialization.jsonObject(with: run.stdout) as? [String: Any], run.text + run.stderr)
        return (top, try XCTUnwrap(top["devices"] as? [[String: Any]]))
    }

    func testThreeDevicesInOneProcessWithTheirOwnOptions() throws {
        // Device 2 at its own size: --device-options applies to it alone.
        let run = try ChildProcess.run(VividCLITests.framedump, arguments(count: 60) + ["--device-options", "2=--size 320x180"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let (top, entries) = try summary(run)
        XCTAssertEqual(entries.count, 3)
        XCTAssertEqual(top["failedDevices"] as? Int, 0)
        var skews: [Double] = []
        for (n, entry) in entries.enumerated() {
            let size = n == 2 ? 320 * 180 * 2 : frameSize
            XCTAssertEqual(entry["device"] as? String, devices[n])
            XCTAssertEqual(entry["framesWritten"] as? Int, 60, "device \(n)")
            XCTAssertEqual(entry["width"] as? Int, n == 2 ? 320 : 640)
            XCTAssertEqual(Vivid.fileSize("\(work)/cam\(n).raw"), 60 * size, "device \(n)")
            if n > 0 {
                let skew = try XCTUnwrap(entry["skew"] as? [String: Any], "device \(n) has no skew")
                XCTAssertEqual(skew["reference"] as? String, devices[0])
                let median = try XCTUnwrap(skew["medianMilliseconds"] as? Double)
                // Two 30 fps streams: a frame of one lies within half a frame time (16.7 ms) of the other's
                // nearest frame, give or take vivid's timer.
                XCTAssertLessThan(median, 25, "device \(n): \(skew)")
                skews.append(median)
            }
        }
        // The frames of the three files are vivid's colour bars, frame after frame: the first frame of
        // device 0 and 1 are the same pattern (same settings), byte for byte.
        let first0 = try FileHandle(forReadingFrom: URL(fileURLWithPath: "\(work)/cam0.raw")).readData(ofLength: frameSize)
        let first1 = try FileHandle(forReadingFrom: URL(fileURLWithPath: "\(work)/cam1.raw")).readData(ofLength: frameSize)
        XCTAssertEqual(first0.count, frameSize)
        XCTAssertEqual(first0.prefix(640 * 2 * 100), first1.prefix(640 * 2 * 100), "the top of the colour bars differs between devices")
        print("multi: 3 devices x 60 frames in one process, cpu per frame \(top["cpuMicrosecondsPerFrame"] ?? "?") us, skew medians \(skews) ms")
    }

    func testOneDeviceFailingEndsOnlyItsStream() throws {
        let child = try ChildProcess(VividCLITests.framedump, arguments(count: 150))
        // Once device 1 has written some frames, its driver fails for good (another file handle).
        let victim = try Vivid.open(devices[1])
        try Vivid.waitFor("\(work)/cam1.raw", bytes: 10 * frameSize)
        try Vivid.setControl(victim, "inject_fatal_streaming_error")
        let run = child.wait()
        XCTAssertEqual(run.status, 1, "one device failed: exit 1 at the end; \(run.stderr)")
        XCTAssertTrue(run.stderr.contains(devices[1]), run.stderr)
        let (top, entries) = try summary(run)
        XCTAssertEqual(top["failedDevices"] as? Int, 1)
        for (n, entry) in entries.enumerated() {
            let written = try XCTUnwrap(entry["framesWritten"] as? Int)
            XCTAssertEqual(Vivid.fileSize("\(work)/cam\(n).raw"), written * frameSize, "device \(n): whole frames only")
            if n == 1 {
                XCTAssertNotNil(entry["error"] as? String)
                XCTAssertLessThan(written, 150)
                XCTAssertGreaterThanOrEqual(written, 10)
            } else {
                XCTAssertNil(entry["error"])
                XCTAssertEqual(written, 150, "device \(n) went on")
            }
        }
        print("multi: device 1 failed after \(entries[1]["framesWritten"] ?? "?") frames; the others wrote 150 each")
    }

    func testAllOrNothingStopsEveryDevice() throws {
        let child = try ChildProcess(VividCLITests.framedump, arguments(count: 300) + ["--all-or-nothing"])
        let victim = try Vivid.open(devices[2])
        try Vivid.waitFor("\(work)/cam2.raw", bytes: 10 * frameSize)
        try Vivid.setControl(victim, "inject_fatal_streaming_error")
        let run = child.wait()
        XCTAssertEqual(run.status, 1, run.stderr)
        XCTAssertTrue(run.stderr.contains("--all-or-nothing"), run.stderr)
        let (_, entries) = try summary(run)
        for (n, entry) in entries.enumerated() {
            let written = try XCTUnwrap(entry["framesWritten"] as? Int)
            XCTAssertLessThan(written, 300, "device \(n) was stopped")
            XCTAssertEqual(Vivid.fileSize("\(work)/cam\(n).raw"), written * frameSize, "device \(n): whole frames only")
        }
    }
}
