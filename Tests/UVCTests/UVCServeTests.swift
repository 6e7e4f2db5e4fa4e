import Foundation
import FrameBridgeTestSupport
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `framedump serve` on the emulated USB webcam through the real uvcvideo: the cable pulled
/// and plugged back under a viewer's open connection, and MJPEG passed through whole.
final class UVCServeTests: XCTestCase {
    private var server: ChildProcess?

    override func tearDown() {
        server?.send(SIGTERM)
        if let server { _ = server.wait() }
        server = nil
    }

    /// The release framedump when tools/test names it, as users run it.
    private var framedump: String {
        if let bin = ProcessInfo.processInfo.environment["FRAMEBRIDGE_RELEASE_BIN"], !bin.isEmpty { return bin + "/framedump" }
        return UVC.framedump
    }

    private func serve(_ arguments: [String], port: Int) throws {
        let child = try ChildProcess(framedump, ["serve", "--listen", "127.0.0.1:\(port)"] + arguments)
        server = child
        let start = MonotonicClock.nanoseconds()
        while MonotonicClock.nanoseconds() - start < 60_000_000_000 {
            if let snapshot = try? HTTPTestClient.get("/snapshot", port: port), snapshot.status == 200 { return }
            usleep(100_000)
        }
        child.send(SIGTERM)
        let run = child.wait()
        server = nil
        XCTFail("framedump serve gave no picture within 60 s: status \(run.status), \(run.stderr)")
        throw CameraFailure("no picture")
    }

    private func state(port: Int) throws -> [String: Any] {
        let answer = try HTTPTestClient.get("/state", port: port)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any])
        return try XCTUnwrap((json["cameras"] as? [[String: Any]])?.first)
    }

    func testUnplugAndReplugShowDisconnectedThenTheCameraOnTheSameConnection() throws {
        let first = try EmulatedCamera()
        let port = 8096
        try serve(["-d", first.node, "--pixel-format", "YUYV", "--size", "640x360", "--fps", "15"], port: port)
        let viewer = try HTTPTestClient(port: port)
        viewer.send("GET /stream HTTP/1.1\r\nHost: vm\r\n\r\n")
        XCTAssertEqual(viewer.head()?.status, 200)
        for _ in 0..<5 { XCTAssertNotNil(viewer.part()?.headers["x-frame-sequence"], "frames of the camera") }

        first.unplug()
        var sawPlaceholder = false
        for _ in 0..<200 {
            guard let part = viewer.part() else { break }
            if part.headers["x-frame-placeholder"] == "1" {
                sawPlaceholder = true
                break
            }
        }
        XCTAssertTrue(sawPlaceholder, "the viewer sees DISCONNECTED on its connection")
        let gone = try state(port: port)
        XCTAssertEqual(gone["status"] as? String, "disconnected")
        XCTAssertEqual(gone["disconnects"] as? Int, 1, "the unplug is counted")
        XCTAssertEqual(gone["reconnects"] as? Int, 0, "no reconnect before the camera is back")

        let second = try EmulatedCamera()
        var backAfter = 0
        var sawFrame = false
        for parts in 0..<600 {
            guard let part = viewer.part() else { break }
            if part.headers["x-frame-sequence"] != nil {
                sawFrame = true
                backAfter = parts
                break
            }
        }
        XCTAssertTrue(sawFrame, "the camera's pictures come back on the same connection")
        let camera = try state(port: port)
        XCTAssertEqual(camera["status"] as? String, "streaming")
        XCTAssertEqual(camera["disconnects"] as? Int, 1)
        XCTAssertEqual(camera["reconnects"] as? Int, 1, "the return is counted once it streams again")
        print("uvc serve: unplugged, DISCONNECTED shown, \(second.node) back after \(backAfter) placeholder parts, on one connection")
    }

    func testMJPEGIsPassedThroughAndACutFrameIsNeverServed() throws {
        let camera = try EmulatedCamera(["--corrupt-every", "3"])
        let port = 8097
        try serve(["-d", camera.node, "--pixel-format", "MJPG", "--size", "640x360", "--fps", "15"], port: port)
        let viewer = try HTTPTestClient(port: port)
        viewer.send("GET /stream HTTP/1.1\r\nHost: vm\r\n\r\n")
        XCTAssertEqual(viewer.head()?.status, 200)
        for n in 0..<20 {
            let part = try XCTUnwrap(viewer.part(), "part \(n)")
            let body = part.body
            XCTAssertTrue(body.count > 4 && body[0] == 0xFF && body[1] == 0xD8, "part \(n) starts with SOI")
            XCTAssertTrue(body.count > 4 && body[body.count - 2] == 0xFF && body[body.count - 1] == 0xD9, "part \(n) ends with EOI: no cut frame is served")
        }
        let state = try state(port: port)
        XCTAssertTrue((state["encoder"] as? String)?.hasPrefix("passthrough") ?? false, "\(state)")
        XCTAssertGreaterThan(state["corruptFrames"] as? Int ?? 0, 0, "the cut frames were seen and counted")
    }
}
