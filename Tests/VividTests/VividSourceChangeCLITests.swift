import Foundation
import FrameBridge
import FrameBridgeTestSupport
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `framedump capture` on vivid's HDMI input (3) while the source changes (issue 13, item 4):
/// a capture at 1280x720 follows a change to 640x480 made from this process (another file
/// handle) into a second segment file, survives "no signal" with --wait-for-signal, fails
/// clearly without it, and stops cleanly with --on-source-change stop. Uses /dev/video2 and
/// puts signal mode 0 and input 0 back.
final class VividSourceChangeCLITests: XCTestCase {
    private let path = Vivid.contiguous
    private let work = "/tmp/framedump-source-change"
    private let big = 1280 * 720 * 2
    private let small = 640 * 480 * 2
    private var control: VideoDevice!
    private var hdmi: UInt32 = 3

    override func setUpWithError() throws {
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        // This handle plays the other process that turns the source's knobs.
        control = try Vivid.open(path)
        hdmi = try XCTUnwrap(try control.inputs().first { $0.capabilityFlags.contains(.dvTimings) }, "\(path) has no HDMI input").index
        try control.selectInput(hdmi)
        try Vivid.setControl(control, "dv_timings_signal_mode", 4)
        try Vivid.setControl(control, "dv_timings", try menuIndex("1280x720p60"))
        try control.setDVTimings(try control.queryDVTimings())
    }

    override func tearDown() {
        guard let control else { return }    // setUp skipped or failed before it opened the device
        try? control.selectInput(hdmi)
        try? Vivid.setControl(control, "dv_timings_signal_mode", 0)
        try? control.selectInput(0)
        self.control = nil
    }

    private func menuIndex(_ prefix: String, control name: String = "dv_timings") throws -> Int64 {
        let menu = try XCTUnwrap(try control.control(named: name), "\(path) has no \(name) control").menuItems
        return Int64(try XCTUnwrap(menu.first { $0.name.hasPrefix(prefix) }, "\(menu.map(\.name))").index)
    }

    private func capture(_ count: Int, _ extra: [String]) throws -> ChildProcess {
        try ChildProcess(VividCLITests.framedump, ["capture", "-d", path, "--input", String(hdmi), "--pixel-format", "YUYV",
                                                   "--set-ctrl", "osd_text_mode=2", "-n", String(count), "--json"] + extra)
    }

    private func json(_ run: ChildProcess.Result, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        try run.jsonObject(file: file, line: line)
    }

    /// vivid's colour bars at `width`: the luma of the eight bars in row `row` of a YUYV frame, left to right.
    private func barLuma(_ frame: Data, width: Int, row: Int) -> [Int] {
        let barWidth = width / 8
        return (0..<8).map { bar in Int(frame[frame.startIndex + (row * width + bar * barWidth + barWidth / 2) * 2]) }
    }

    func testFollowsAChangeTo640x480IntoASecondSegment() throws {
        let output = "\(work)/hdmi.raw"
        let child = try capture(120, ["-o", output])
        try Vivid.waitFor(output, bytes: 10 * big)
        try Vivid.setControl(control, "dv_timings", try menuIndex("640x480p59"))
        let run = child.wait()
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try json(run)
        let segments = try XCTUnwrap(summary["segments"] as? [[String: Any]], "\(summary)")
        XCTAssertEqual(segments.count, 2, "\(segments)")
        guard segments.count == 2 else { return }
        let first = try XCTUnwrap(segments[0]["framesWritten"] as? Int)
        let second = try XCTUnwrap(segments[1]["framesWritten"] as? Int)
        XCTAssertEqual(first + second, 120)
        XCTAssertEqual(summary["framesWritten"] as? Int, 120)
        XCTAssertEqual(summary["sourceChanges"] as? Int, 1)
        XCTAssertEqual([segments[0]["width"] as? Int, segments[0]["height"] as? Int], [1280, 720])
        XCTAssertEqual([segments[1]["width"] as? Int, segments[1]["height"] as? Int], [640, 480])
        XCTAssertEqual(segments[0]["output"] as? String, output)
        XCTAssertEqual(segments[1]["output"] as? String, "\(work)/hdmi-seg1.raw")
        XCTAssertGreaterThanOrEqual(first, 10)
        XCTAssertGreaterThan(second, 0)
        // Each file holds exactly its frames, each of its segment's size.
        XCTAssertEqual(Vivid.fileSize(output), first * big)
        XCTAssertEqual(Vivid.fileSize("\(work)/hdmi-seg1.raw"), second * small)
        // And every frame of the second file is a 640-wide picture: vivid's bars line up at
        // 640 pixels a row, top and bottom, getting darker from left to right.
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(work)/hdmi-seg1.raw"))
        for frame in 0..<second {
            let picture = data.subdata(in: (frame * small)..<((frame + 1) * small))
            let top = barLuma(picture, width: 640, row: 60)
            let bottom = barLuma(picture, width: 640, row: 420)
            XCTAssertEqual(top, bottom, "frame \(frame) of the second segment is not 640 wide")
            XCTAssertEqual(top, top.sorted(by: >), "frame \(frame): the bars are not vivid's: \(top)")
        }
        XCTAssertTrue(run.stderr.contains("the source changed to YUYV 640x480"), run.stderr)
        print("cli source change: 1280x720 x \(first) frames, then 640x480 x \(second) frames in \(work)/hdmi-seg1.raw; dropped at the change: \(summary["framesDroppedAtSourceChange"] ?? "?")")
    }

    func testY4MFilesGetAHeaderEachAndFFprobeReadsBoth() throws {
        let output = "\(work)/hdmi.y4m"
        let child = try capture(60, ["-o", output, "--container", "y4m"])
        try Vivid.waitFor(output, bytes: 5 * big)
        try Vivid.setControl(control, "dv_timings", try menuIndex("640x480p59"))
        let run = child.wait()
        XCTAssertEqual(run.status, 0, run.stderr)
        for (file, size) in [(output, "1280x720"), ("\(work)/hdmi-seg1.y4m", "640x480")] {
            let probe = try ChildProcess.run("/usr/bin/ffprobe", ["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                                                                 "stream=width,height,nb_read_frames", "-of", "csv=p=0", file])
            XCTAssertEqual(probe.status, 0, "\(file): \(probe.stderr)")
            XCTAssertTrue(probe.text.hasPrefix(size.replacingOccurrences(of: "x", with: ",")), "\(file): \(probe.text)")
        }
    }

    func testNoSignalIsSurvivedWithWaitForSignal() throws {
        let output = "\(work)/nosignal.raw"
        let child = try capture(90, ["-o", output, "--wait-for-signal", "20"])
        try Vivid.waitFor(output, bytes: 10 * big)
        try Vivid.setControl(control, "dv_timings_signal_mode", 1)
        usleep(1_500_000)
        let during = Vivid.fileSize(output)
        try Vivid.setControl(control, "dv_timings_signal_mode", 4)
        let run = child.wait()
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try json(run)
        XCTAssertEqual(summary["framesWritten"] as? Int, 90)
        XCTAssertEqual((summary["segments"] as? [[String: Any]])?.count, 1, "the same format after the signal came back: one segment")
        XCTAssertGreaterThan(summary["noSignalSeconds"] as? Double ?? 0, 1.0, "\(summary)")
        XCTAssertEqual(Vivid.fileSize(output), 90 * big)
        XCTAssertLessThan(during, 90 * big, "frames went on during no signal")
        XCTAssertTrue(run.stderr.contains("no signal"), run.stderr)
    }

    func testACaptureStartedWithoutSignalWaitsForIt() throws {
        try Vivid.setControl(control, "dv_timings_signal_mode", 1)
        let output = "\(work)/late.raw"
        let child = try capture(30, ["-o", output, "--wait-for-signal", "20"])
        // Its start-up (over a second for a debug build under TCG) is not part of the wait.
        try Vivid.waitUntilOpen(pid: child.pid, path)
        usleep(1_500_000)
        XCTAssertLessThanOrEqual(Vivid.fileSize(output), 0, "nothing is written before the signal comes")
        try Vivid.setControl(control, "dv_timings_signal_mode", 4)
        let run = child.wait()
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try json(run)
        XCTAssertEqual(summary["framesWritten"] as? Int, 30)
        XCTAssertEqual([summary["width"] as? Int, summary["height"] as? Int], [1280, 720])
        XCTAssertGreaterThan(summary["noSignalSeconds"] as? Double ?? 0, 1.0, "the wait at the start is counted: \(summary)")
        XCTAssertEqual(Vivid.fileSize(output), 30 * big)
        XCTAssertTrue(run.stderr.contains("the signal on input \(hdmi) came after"), run.stderr)
    }

    func testNoSignalWithoutWaitIsAClearErrorAndKeepsWholeFrames() throws {
        let output = "\(work)/lost.raw"
        let child = try capture(600, ["-o", output])
        try Vivid.waitFor(output, bytes: 10 * big)
        try Vivid.setControl(control, "dv_timings_signal_mode", 1)
        let run = child.wait()
        XCTAssertEqual(run.status, 1, run.stderr)
        XCTAssertTrue(run.stderr.contains("\(path): the source lost its signal"), run.stderr)
        XCTAssertTrue(run.stderr.contains("--wait-for-signal"), run.stderr)
        XCTAssertEqual(Vivid.fileSize(output) % big, 0, "whole frames only")
        XCTAssertGreaterThanOrEqual(Vivid.fileSize(output), 10 * big)
        // At the start, no signal is refused before anything is written.
        let start = try ChildProcess.run(VividCLITests.framedump, ["capture", "-d", path, "--input", String(hdmi), "-n", "1", "-o", "\(work)/never.raw"])
        XCTAssertEqual(start.status, 1, start.stderr)
        XCTAssertTrue(start.stderr.contains("no signal on input \(hdmi)"), start.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(work)/never.raw"))
    }

    func testOnSourceChangeStopEndsCleanly() throws {
        let output = "\(work)/stop.raw"
        let child = try capture(600, ["-o", output, "--on-source-change", "stop"])
        try Vivid.waitFor(output, bytes: 10 * big)
        try Vivid.setControl(control, "dv_timings", try menuIndex("640x480p59"))
        let run = child.wait()
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try json(run)
        let written = try XCTUnwrap(summary["framesWritten"] as? Int)
        XCTAssertLessThan(written, 600)
        XCTAssertEqual(Vivid.fileSize(output), written * big)
        XCTAssertNotNil(summary["stoppedBySourceChange"] as? String, "\(summary)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(work)/stop-seg1.raw"))
    }

    func testY4MOnStandardOutputStopsWithAMessageAtAChange() throws {
        let output = "\(work)/stdout.y4m"
        let child = try ChildProcess("/bin/sh", ["-c", "\(VividCLITests.framedump) capture -d \(path) --input \(hdmi) --pixel-format YUYV -n 600 -o - --container y4m --quiet > \(output)"])
        try Vivid.waitFor(output, bytes: 10 * big)
        try Vivid.setControl(control, "dv_timings", try menuIndex("640x480p59"))
        let run = child.wait()
        XCTAssertEqual(run.status, 1, run.stderr)
        XCTAssertTrue(run.stderr.contains("standard output cannot change its format"), run.stderr)
        // What was written is one whole 1280x720 stream.
        let probe = try ChildProcess.run("/usr/bin/ffprobe", ["-v", "error", "-count_frames", "-show_entries", "stream=width,height,nb_read_frames",
                                                             "-of", "csv=p=0", output])
        XCTAssertEqual(probe.status, 0, probe.stderr)
        let fields = probe.text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ",").map(String.init)
        XCTAssertEqual(Array(fields.prefix(2)), ["1280", "720"], probe.text)
        let frames = Int(fields.last ?? "") ?? -1
        XCTAssertGreaterThanOrEqual(frames, 10)
        let header = "YUV4MPEG2 W1280 H720".utf8.count
        XCTAssertGreaterThan(Vivid.fileSize(output), frames * big + header)
    }

    /// --fps that the driver changes: a one-line notice and both rates in the summary.
    func testAnAnalogSourcesStandardIsAppliedAtTheStart() throws {
        let tv = try XCTUnwrap(try control.inputs().first { $0.capabilityFlags.contains(.standards) }, "\(path) has no TV input").index
        defer {
            try? control.selectInput(tv)
            try? Vivid.setControl(control, "standard_signal_mode", 0)
        }
        try control.selectInput(tv)
        // NTSC is set and the source sends PAL-B: a tuner left at NTSC, a PAL source plugged in.
        let ntsc = try XCTUnwrap(try control.standards().first { $0.name.hasPrefix("NTSC") })
        try control.setStandard(ntsc.id)
        try Vivid.setControl(control, "standard_signal_mode", 4)
        try Vivid.setControl(control, "standard", try menuIndex("PAL-B", control: "standard"))
        XCTAssertEqual(try control.standard() & StandardID.pal, 0, "NTSC is set before the capture")
        let output = "\(work)/tv.raw"
        // The size asked for: G_FMT may still hold VividFieldTests' 720x288 field format. On
        // NTSC, vivid answers 720x576 with 720x480.
        let run = try ChildProcess.run(VividCLITests.framedump, ["capture", "-d", path, "--input", String(tv), "--pixel-format", "YUYV",
                                                                 "--field", "interlaced", "--size", "720x576", "-n", "3", "-o", output, "--json", "--quiet"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try json(run)
        XCTAssertEqual([summary["width"] as? Int, summary["height"] as? Int], [720, 576], "\(summary)")
        XCTAssertEqual(Vivid.fileSize(output), 3 * 720 * 576 * 2)
        XCTAssertNotEqual(try control.standard() & StandardID.pal, 0, "QUERYSTD's PAL was applied (S_STD)")
        print("cli analog start: NTSC set, PAL-B sent: framedump applied PAL and captured 3 frames of 720x576")
    }

    func testAFrameRateTheDriverChangesIsReported() throws {
        let run = try ChildProcess.run(VividCLITests.framedump, ["capture", "-d", path, "--input", "0", "--pixel-format", "YUYV", "--size", "640x360",
                                                               "--fps", "7.3", "-n", "2", "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try json(run)
        let granted = try XCTUnwrap(summary["framesPerSecondGranted"] as? Double, "\(summary)")
        XCTAssertEqual(summary["framesPerSecondRequested"] as? Double, 7.3)
        XCTAssertNotEqual(granted, 7.3, accuracy: 0.01)
        XCTAssertTrue(run.stderr.contains("--fps 7.3: the driver set"), run.stderr)
        print("cli fps: asked 7.3, vivid set \(granted)")
    }
}
