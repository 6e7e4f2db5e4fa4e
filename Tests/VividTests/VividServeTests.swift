import Foundation
import FrameBridge
import FrameBridgeTestSupport
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `framedump serve` on vivid, read as clients read it: ffmpeg (as go2rtc and other restreamers
/// do), sixteen viewers at once with one that reads nothing, requests a server on a network
/// gets, and an HDMI source that changes and loses its signal under a viewer's connection.
final class VividServeTests: XCTestCase {
    let work = "/tmp/framedump-serve-tests"
    private var server: ChildProcess?
    private var control: VideoDevice?

    override func setUpWithError() throws {
        _ = try Vivid.open()
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let server {
            server.send(SIGTERM)
            _ = server.wait()
        }
        server = nil
        if let control {
            try? Vivid.setControl(control, "dv_timings_signal_mode", 0)
            try? control.selectInput(0)
        }
        control = nil
    }

    static let deterministic = ["--input", "0", "--pixel-format", "YUYV", "--size", "640x360", "--fps", "30", "--set-ctrl", "osd_text_mode=2"]

    /// The framedump to serve with: the release build when tools/test names it
    /// (FRAMEBRIDGE_RELEASE_BIN), as users run it; a debug build of SwiftNIO and the encoder is
    /// many times slower, and under TCG it cannot keep up with a camera.
    static var framedump: String {
        if let bin = ProcessInfo.processInfo.environment["FRAMEBRIDGE_RELEASE_BIN"], !bin.isEmpty { return bin + "/framedump" }
        return VividCLITests.framedump
    }

    /// Starts the server and waits until it has published a picture.
    func serve(_ arguments: [String], port: Int) throws -> ChildProcess {
        let child = try Self.startServer(arguments, port: port)
        server = child
        return child
    }

    /// `framedump serve --listen 127.0.0.1:PORT ARGUMENTS`, once it has published a picture.
    static func startServer(_ arguments: [String], port: Int) throws -> ChildProcess {
        let child = try ChildProcess(framedump, ["serve", "--listen", "127.0.0.1:\(port)"] + arguments)
        let start = MonotonicClock.nanoseconds()
        while MonotonicClock.nanoseconds() - start < 60_000_000_000 {
            if let snapshot = try? HTTPTestClient.get("/snapshot", port: port), snapshot.status == 200 { return child }
            usleep(100_000)
        }
        child.send(SIGTERM)
        let run = child.wait()
        throw CaptureError(.invalidState, "framedump serve gave no picture within 60 s: status \(run.status), \(run.stderr)")
    }

    private func state(port: Int) throws -> [String: Any] {
        let answer = try HTTPTestClient.get("/state", port: port)
        XCTAssertEqual(answer.status, 200)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any])
    }

    private func camera(_ state: [String: Any]) throws -> [String: Any] {
        try XCTUnwrap((state["cameras"] as? [[String: Any]])?.first)
    }

    /// Width and height from a JPEG's SOF marker.
    private func jpegSize(_ bytes: [UInt8]) -> (Int, Int)? {
        var i = 2
        while i + 9 < bytes.count {
            guard bytes[i] == 0xFF else { return nil }
            let marker = bytes[i + 1]
            let length = Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
            if (0xC0...0xC3).contains(marker) {
                return (Int(bytes[i + 7]) << 8 | Int(bytes[i + 8]), Int(bytes[i + 5]) << 8 | Int(bytes[i + 6]))
            }
            i += 2 + length
        }
        return nil
    }

    func testFFmpegReadsTheStreamAndTheSnapshotIsTheCapturedPicture() throws {
        // The reference: one frame as framedump capture writes it (vivid's deterministic bars).
        let raw = "\(work)/reference.yuyv"
        let capture = try ChildProcess.run(VividCLITests.framedump, ["capture", "-d", Vivid.main] + Self.deterministic + ["-n", "1", "-o", raw, "--quiet"])
        XCTAssertEqual(capture.status, 0, capture.stderr)
        let port = 8091
        _ = try serve(["-d", Vivid.main, "--quality", "90"] + Self.deterministic, port: port)

        let decoded = "\(work)/ffmpeg.yuyv"
        let ffmpeg = try ChildProcess.run("/usr/bin/ffmpeg", ["-v", "error", "-y", "-f", "mjpeg", "-i", "http://127.0.0.1:\(port)/stream",
                                                              "-frames:v", "30", "-f", "rawvideo", "-pix_fmt", "yuyv422", decoded])
        XCTAssertEqual(ffmpeg.status, 0, ffmpeg.stderr)
        XCTAssertEqual(Vivid.fileSize(decoded), 30 * 640 * 360 * 2, "ffmpeg decoded 30 whole 640x360 frames")

        // The snapshot, decoded by ffmpeg, is the captured picture within JPEG's loss.
        let snapshot = try HTTPTestClient.get("/snapshot", port: port)
        XCTAssertEqual(snapshot.status, 200)
        XCTAssertEqual(snapshot.headers["content-type"], "image/jpeg")
        let jpeg = "\(work)/snapshot.jpg"
        try Data(snapshot.body).write(to: URL(fileURLWithPath: jpeg))
        let picture = "\(work)/snapshot.yuyv"
        let decode = try ChildProcess.run("/usr/bin/ffmpeg", ["-v", "error", "-y", "-i", jpeg, "-f", "rawvideo", "-pix_fmt", "yuyv422", picture])
        XCTAssertEqual(decode.status, 0, decode.stderr)
        let reference = try Data(contentsOf: URL(fileURLWithPath: raw))
        let served = try Data(contentsOf: URL(fileURLWithPath: picture))
        XCTAssertEqual(served.count, reference.count)
        guard served.count == reference.count else { return }
        var lumaError = 0
        for i in stride(from: 0, to: reference.count, by: 2) { lumaError += abs(Int(served[i]) - Int(reference[i])) }
        let mean = Double(lumaError) / Double(reference.count / 2)
        print("serve: snapshot luma mean error \(mean) against the captured frame (quality 90)")
        XCTAssertLessThan(mean, 3.0, "the snapshot is vivid's picture")

        let camera = try camera(try state(port: port))
        XCTAssertEqual(camera["status"] as? String, "streaming")
        XCTAssertGreaterThanOrEqual(camera["captured"] as? Int ?? 0, 30)
        XCTAssertEqual((camera["format"] as? [String: Any])?["width"] as? Int, 640)
        print("serve: \(Self.framedump): captured \(camera["captured"] ?? "?") at \(camera["capturedFps"] ?? "?") fps, driver dropped \(camera["driverDropped"] ?? "?")")
    }

    func testSixteenViewersGetFramesAndOneThatReadsNothingHoldsUpNone() throws {
        let port = 8092
        _ = try serve(["-d", Vivid.main] + Self.deterministic, port: port)
        let slow = try HTTPTestClient(port: port)
        var small: Int32 = 4096
        setsockopt(slow.descriptor, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        slow.send("GET /stream HTTP/1.1\r\nHost: vm\r\n\r\n")
        let viewers = 16, parts = 90
        let received = Locked([[UInt32]](repeating: [], count: viewers))
        let group = DispatchGroup()
        for n in 0..<viewers {
            group.enter()
            DispatchQueue.global().async {
                defer { group.leave() }
                guard let client = try? HTTPTestClient(port: port) else { return }
                client.send("GET /stream HTTP/1.1\r\nHost: vm\r\n\r\n")
                guard client.head()?.status == 200 else { return }
                var serials: [UInt32] = []
                while serials.count < parts, let part = client.part() {
                    // The hub's serial (pictures published), not the driver's sequence, which also
                    // advances over the frames the capture passes over when it falls behind.
                    guard part.headers["x-frame-sequence"] != nil, let serial = part.headers["x-frame-serial"].flatMap(UInt32.init) else { continue }
                    serials.append(serial)
                }
                received.withLock { $0[n] = serials }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 300), .success, "sixteen viewers read \(parts) frames each within 5 minutes")
        let all = received.withLock { $0 }
        // The pictures' own numbers: every reading viewer is served alike (the one that reads
        // nothing takes nobody's frames), whatever speed TCG gives the capture.
        var spans: [Int] = []
        for (n, sequences) in all.enumerated() {
            XCTAssertEqual(sequences.count, parts, "viewer \(n) got \(parts) frames")
            XCTAssertEqual(sequences, sequences.sorted(), "viewer \(n)'s frames are in order")
            if let first = sequences.first, let last = sequences.last { spans.append(Int(last - first) + 1) }
        }
        if let shortest = spans.min(), let longest = spans.max() {
            print("serve: 16 viewers: each got \(parts) frames out of \(shortest)...\(longest) published meanwhile")
            XCTAssertLessThanOrEqual(Double(longest), Double(shortest) * 1.5 + 5, "no reading viewer was held back more than the others: \(spans)")
        }
        let camera = try camera(try state(port: port))
        let entries = try XCTUnwrap(camera["viewers"] as? [[String: Any]])
        let skipped = entries.compactMap { $0["skipped"] as? Int }.max() ?? 0
        XCTAssertGreaterThan(skipped, 0, "the viewer that reads nothing skips frames")
        print("serve: 16 viewers x \(parts) frames, the viewer that read nothing skipped \(skipped); captured \(camera["captured"] ?? "?") at \(camera["capturedFps"] ?? "?") fps")
        withExtendedLifetime(slow) {}
    }

    func testBadRequestsAreAnsweredAndTheStreamAndResourcesRecover() throws {
        let port = 8093
        let child = try serve(["-d", Vivid.main, "--max-clients", "64"] + Self.deterministic, port: port)
        let viewer = try HTTPTestClient(port: port)
        viewer.send("GET /stream HTTP/1.1\r\nHost: vm\r\n\r\n")
        XCTAssertEqual(viewer.head()?.status, 200)
        XCTAssertNotNil(viewer.part())
        func descriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(child.pid)/fd").count) ?? -1 }
        func rss() -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(child.pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
        }
        let fdsBefore = descriptors(), rssBefore = rss()

        var table: [(String, Int?)] = []
        let malformed = try HTTPTestClient(port: port)
        malformed.send("NOT A REQUEST\0\r\n\r\n")
        table.append(("malformed request line", malformed.head()?.status))
        let huge = try HTTPTestClient(port: port)
        huge.send("GET / HTTP/1.1\r\nHost: vm\r\nX-Big: \(String(repeating: "x", count: 64_000))\r\n\r\n")
        table.append(("64 KB header", huge.head()?.status))
        table.append(("POST", try HTTPTestClient.get("/stream", port: port, method: "POST").status))
        table.append(("path outside the routes", try HTTPTestClient.get("/../../etc/shadow", port: port).status))
        let half = try HTTPTestClient(port: port)
        half.send("GET /snapshot HTTP/1.1\r\nHo")
        table.append(("half-sent request (waits 10 s)", half.head()?.status))
        // 200 connections at once, each asking for a snapshot.
        var crowd: [HTTPTestClient] = []
        for _ in 0..<200 { if let client = try? HTTPTestClient(port: port) { crowd.append(client) } }
        XCTAssertEqual(crowd.count, 200, "200 connections")
        usleep(1_000_000) // all accepted (and counted) before any request arrives
        for client in crowd { client.send("GET /snapshot HTTP/1.1\r\nHost: vm\r\n\r\n") }
        var answers: [Int: Int] = [:]
        for client in crowd { answers[client.head()?.status ?? 0, default: 0] += 1 }
        crowd.removeAll()
        for (name, status) in table { print("serve bad input: \(name): \(status.map(String.init) ?? "no answer")") }
        print("serve bad input: 200 connections at once: \(answers.sorted { $0.key < $1.key }.map { "\($0.value) x \($0.key)" }.joined(separator: ", "))")
        XCTAssertEqual(table.map { $0.1 }, [400, 431, 405, 404, 408])
        XCTAssertEqual(answers[0], nil, "every connection got an answer: \(answers)")
        XCTAssertEqual((answers[200] ?? 0) + (answers[503] ?? 0), 200, "\(answers)")
        XCTAssertGreaterThan(answers[503] ?? 0, 0, "beyond --max-clients 64: 503")

        for _ in 0..<5 { XCTAssertNotNil(viewer.part(), "the viewer's stream goes on") }
        // Descriptors and memory come back to their level once the connections are gone.
        var fdsAfter = descriptors()
        for _ in 0..<50 where fdsAfter > fdsBefore {
            usleep(100_000)
            fdsAfter = descriptors()
        }
        let rssAfter = rss()
        print("serve bad input: descriptors \(fdsBefore) -> \(fdsAfter), RSS \(rssBefore) -> \(rssAfter) KiB")
        XCTAssertLessThanOrEqual(fdsAfter, fdsBefore)
        XCTAssertLessThan(rssAfter, rssBefore + 16 * 1024, "RSS returns near its level")
    }

    /// Reads `count` camera pictures of `/stream` from a new viewer: their serial numbers (the
    /// hub's count of pictures published; unlike the driver's sequence, it has no gap where the
    /// driver dropped a frame) and bodies.
    private func readStream(port: Int, count: Int) throws -> (serials: [UInt64], bodies: [[UInt8]]) {
        let viewer = try HTTPTestClient(port: port)
        viewer.send("GET /stream?extra_headers=1 HTTP/1.1\r\nHost: vm\r\n\r\n")
        XCTAssertEqual(viewer.head()?.status, 200)
        var serials: [UInt64] = [], bodies: [[UInt8]] = []
        while serials.count < count, let part = viewer.part() {
            guard part.headers["x-frame-sequence"] != nil, let serial = part.headers["x-frame-serial"].flatMap(UInt64.init) else { continue }
            serials.append(serial)
            bodies.append(part.body)
        }
        XCTAssertEqual(serials.count, count, "the viewer got \(count) frames")
        return (serials, bodies)
    }

    func testDropSameFramesSkipsRepeatsButSendsEveryNPlusOneAndAChangedPictureAtOnce() throws {
        let n = 3
        // A still picture: vivid's bars with osd_text_mode=2 are the same frame after frame (the
        // allocator tests rely on it), so every JPEG is the same.
        let port = 8098
        let still = try serve(["-d", Vivid.main, "--drop-same-frames", String(n)] + Self.deterministic, port: port)
        let (serials, bodies) = try readStream(port: port, count: 12)
        XCTAssertTrue(bodies.allSatisfy { $0 == bodies[0] }, "vivid's picture is still (osd_text_mode=2): the parts are one JPEG")
        // The first part is the picture the viewer found on joining; then N repeats are skipped
        // and the (N+1)th goes out: the serial advances by N+1 from part to part.
        let gaps = zip(serials.dropFirst(), serials).map { Int($0) - Int($1) }
        print("serve --drop-same-frames \(n), still picture: serial gaps \(gaps)")
        XCTAssertTrue(gaps.allSatisfy { $0 >= n + 1 }, "no repeat is sent before N were skipped: \(gaps)")
        // A frame the viewer is still writing when the next comes is replaced, not counted as a
        // repeat, so under TCG a gap can be longer now and then; most are exactly N+1.
        XCTAssertGreaterThanOrEqual(gaps.filter { $0 == n + 1 }.count, gaps.count * 3 / 4, "a repeat goes out after N skipped: \(gaps)")
        XCTAssertTrue(gaps.allSatisfy { $0 <= 2 * (n + 1) }, "never more than N repeats skipped in a row (beyond a frame replaced while writing): \(gaps)")
        let viewers = try XCTUnwrap(try camera(try state(port: port))["viewers"] as? [[String: Any]])
        XCTAssertTrue(viewers.isEmpty || viewers.allSatisfy { ($0["skipped"] as? Int ?? 0) > 0 }, "the skipped repeats are counted: \(viewers)")
        still.send(SIGTERM)
        _ = still.wait()
        server = nil

        // A moving picture: with vivid's OSD text on, every frame differs, and each one goes out.
        let moving = try serve(["-d", Vivid.main, "--drop-same-frames", String(n), "--input", "0", "--pixel-format", "YUYV",
                                "--size", "640x360", "--fps", "30", "--set-ctrl", "osd_text_mode=0"], port: port + 1)
        let changing = try readStream(port: port + 1, count: 12)
        XCTAssertTrue(zip(changing.bodies.dropFirst(), changing.bodies).allSatisfy { $0 != $1 }, "vivid's OSD text changes every frame")
        let steps = zip(changing.serials.dropFirst(), changing.serials).map { Int($0) - Int($1) }
        print("serve --drop-same-frames \(n), moving picture: serial gaps \(steps)")
        XCTAssertGreaterThanOrEqual(steps.filter { $0 == 1 }.count, steps.count * 3 / 4, "a changed picture is sent at once: \(steps)")
        withExtendedLifetime(moving) {}
    }

    func testAnHDMISourceChangeAndALostSignalKeepTheViewersConnection() throws {
        let path = Vivid.contiguous
        let control = try Vivid.open(path)
        self.control = control
        let hdmi = try XCTUnwrap(try control.inputs().first { $0.capabilityFlags.contains(.dvTimings) }).index
        try control.selectInput(hdmi)
        func menuIndex(_ prefix: String) throws -> Int64 {
            let menu = try XCTUnwrap(try control.control(named: "dv_timings")).menuItems
            return Int64(try XCTUnwrap(menu.first { $0.name.hasPrefix(prefix) }).index)
        }
        try Vivid.setControl(control, "dv_timings_signal_mode", 4)
        try Vivid.setControl(control, "dv_timings", try menuIndex("1280x720p60"))
        try control.setDVTimings(try control.queryDVTimings())
        let port = 8094
        _ = try serve(["-d", path, "--input", String(hdmi), "--pixel-format", "YUYV", "--set-ctrl", "osd_text_mode=2"], port: port)
        let viewer = try HTTPTestClient(port: port)
        viewer.send("GET /stream HTTP/1.1\r\nHost: vm\r\n\r\n")
        XCTAssertEqual(viewer.head()?.status, 200)
        func next(where wanted: ((headers: [String: String], body: [UInt8])) -> Bool, within parts: Int) -> (headers: [String: String], body: [UInt8])? {
            for _ in 0..<parts {
                guard let part = viewer.part() else { return nil }
                if wanted(part) { return part }
            }
            return nil
        }
        let first = try XCTUnwrap(viewer.part())
        XCTAssertEqual(jpegSize(first.body).map { [$0.0, $0.1] }, [1280, 720])

        try Vivid.setControl(control, "dv_timings", try menuIndex("640x480p59"))
        let changed = try XCTUnwrap(next(where: { self.jpegSize($0.body).map { [$0.0, $0.1] } == [640, 480] }, within: 200),
                                    "the picture comes at its new size on the same connection")
        XCTAssertNotNil(changed.headers["x-frame-sequence"])

        try Vivid.setControl(control, "dv_timings_signal_mode", 1)
        let placeholder = try XCTUnwrap(next(where: { $0.headers["x-frame-placeholder"] == "1" }, within: 200), "NO SIGNAL is shown")
        XCTAssertEqual(jpegSize(placeholder.body).map { [$0.0, $0.1] }, [640, 480], "at the last size")
        XCTAssertEqual(try camera(try state(port: port))["status"] as? String, "no signal")

        try Vivid.setControl(control, "dv_timings_signal_mode", 4)
        let back = try XCTUnwrap(next(where: { $0.headers["x-frame-sequence"] != nil }, within: 100), "the picture returns on the same connection")
        XCTAssertNotNil(jpegSize(back.body))
        let camera = try camera(try state(port: port))
        XCTAssertGreaterThanOrEqual(camera["sourceChanges"] as? Int ?? 0, 2, "\(camera)")
    }
}


/// A real browser on the live view: headless Chromium (Debian's) inside the VM. tools/test runs
/// it in the single-planar boot only: the page is the same in both, and Chromium takes minutes
/// under TCG.
final class VividServeBrowserTests: XCTestCase {
    override func setUpWithError() throws {
        _ = try Vivid.open()
    }

    /// A real browser: headless Chromium opens the page; its screenshot shows vivid's colour bars
    /// where the picture is and text in the statistics panel.
    func testABrowserShowsThePictureAndTheStatisticsPanel() throws {
        let chromium = "/usr/bin/chromium"
        guard FileManager.default.isExecutableFile(atPath: chromium) else {
            return XCTFail("\(chromium) is not installed (tools/setup installs Debian's chromium)")
        }
        let port = 8095
        let server = try VividServeTests.startServer(["-d", Vivid.main] + VividServeTests.deterministic, port: port)
        defer {
            server.send(SIGTERM)
            _ = server.wait()
        }
        let shot = "/tmp/framedump-browser-page.png"
        let width = 800, height = 480
        let browser = try ChildProcess.run("/usr/bin/env", ["HOME=/tmp", chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                                                           "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=\(width),\(height)",
                                                           "--virtual-time-budget=4000", "--screenshot=\(shot)", "http://127.0.0.1:\(port)/"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: shot), "no screenshot (exit \(browser.status)): \(browser.stderr.suffix(2000))")
        let raw = "/tmp/framedump-browser-page.rgb"
        let convert = try ChildProcess.run("/usr/bin/ffmpeg", ["-v", "error", "-y", "-i", shot, "-f", "rawvideo", "-pix_fmt", "rgb24", raw])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let pixels = try Data(contentsOf: URL(fileURLWithPath: raw))
        XCTAssertEqual(pixels.count, width * height * 3)
        guard pixels.count == width * height * 3 else { return }
        func pixel(_ x: Int, _ y: Int) -> [Int] {
            let i = (y * width + x) * 3
            return [Int(pixels[i]), Int(pixels[i + 1]), Int(pixels[i + 2])]
        }
        // vivid's bars, left to right: white, yellow, cyan, green, magenta, red, blue, black;
        // the picture is at (8, 8), 640 wide (the page's padding).
        let bars: [[Bool]] = [[true, true, true], [true, true, false], [false, true, true], [false, true, false],
                              [true, false, true], [true, false, false], [false, false, true], [false, false, false]]
        var seen: [[Int]] = []
        for (k, bar) in bars.enumerated() {
            let rgb = pixel(8 + 80 * k + 40, 8 + 120)
            seen.append(rgb)
            for (channel, high) in bar.enumerated() {
                XCTAssertTrue(high ? rgb[channel] > 120 : rgb[channel] < 70, "bar \(k) at the picture's place is \(rgb), not vivid's")
            }
        }
        // The statistics panel (bottom right): light text on a dark box.
        var light = 0
        for y in (height - 90)..<height { for x in (width - 420)..<width where pixel(x, y).min()! > 150 { light += 1 } }
        print("browser: bars \(seen); \(light) light pixels in the statistics panel")
        XCTAssertGreaterThan(light, 100, "the statistics panel shows text")
    }
}
