import CTurboJPEG
import FrameDump
@testable import FrameServe
import FrameBridgeTestSupport
import Foundation
import V4L2
import V4L2Simulator
import XCTest

/// `framedump serve` on the simulator: the pictures, the state, viewers fast and slow, and
/// requests a server on a network must survive. The frames are produced by the test, so what
/// each viewer could have seen is known.
final class LiveViewServerTests: XCTestCase {
    private static let path = "/dev/video0"

    private struct Rig {
        let backend: SimulatedV4L2Backend
        let server: LiveViewServer
        let port: Int
    }

    private func makeServer(width: UInt32 = 320, height: UInt32 = 180,
                            device: SimulatedDeviceConfiguration = SimulatedDeviceConfiguration(production: .manual),
                            _ configure: (inout ServeOptions) -> Void = { _ in }) throws -> Rig {
        let backend = SimulatedV4L2Backend(path: Self.path, configuration: device)
        var options = ServeOptions(cameras: [ServeOptions.Camera(path: Self.path, format: FormatOptions(pixelFormat: .yuyv, width: width, height: height),
                                                                 backend: backend)])
        options.port = 0
        configure(&options)
        let server = try LiveViewServer(options: options)
        try server.start()
        addTeardownBlock { server.stop() }
        let address = try XCTUnwrap(server.localAddress)
        let port = try XCTUnwrap(Int(address[address.index(after: address.lastIndex(of: ":")!)...]))
        return Rig(backend: backend, server: server, port: port)
    }

    /// Produces `count` frames, one every `interval`, once the pin streams.
    private func produce(_ rig: Rig, count: Int, interval: useconds_t = 20_000) {
        var produced = 0
        var tries = 0
        while produced < count && tries < count * 50 {
            tries += 1
            produced += rig.backend.produceFrames(path: Self.path, count: 1)
            usleep(interval)
        }
    }

    private func jpegSize(_ bytes: [UInt8]) -> (Int, Int)? {
        guard bytes.count > 4, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[bytes.count - 2] == 0xFF, bytes[bytes.count - 1] == 0xD9 else { return nil }
        guard let handle = tjInitDecompress() else { return nil }
        defer { tjDestroy(handle) }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        let result = bytes.withUnsafeBufferPointer { tjDecompressHeader3(handle, $0.baseAddress, UInt($0.count), &width, &height, &subsampling, &colorspace) }
        return result == 0 ? (Int(width), Int(height)) : nil
    }

    func testSnapshotStreamAndStateCarryTheCapturedFrames() throws {
        let rig = try makeServer()
        let viewer = try HTTPTestClient(port: rig.port)
        viewer.send("GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        let head = try XCTUnwrap(viewer.head())
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.headers["content-type"], "multipart/x-mixed-replace;boundary=boundarydonotcross")
        produce(rig, count: 5)
        var sequences: [UInt32] = []
        for _ in 0..<5 {
            let part = try XCTUnwrap(viewer.part(), "a whole part")
            XCTAssertEqual(part.headers["content-type"], "image/jpeg")
            XCTAssertNotNil(part.headers["x-timestamp"])
            let size = try XCTUnwrap(jpegSize(part.body), "a whole JPEG")
            XCTAssertEqual(size.0, 320)
            XCTAssertEqual(size.1, 180)
            if let sequence = part.headers["x-frame-sequence"].flatMap(UInt32.init) { sequences.append(sequence) }
        }
        XCTAssertEqual(sequences, sequences.sorted())
        XCTAssertEqual(sequences.count, 5, "every part is a captured frame")

        let snapshot = try HTTPTestClient.get("/snapshot", port: rig.port)
        XCTAssertEqual(snapshot.status, 200)
        XCTAssertEqual(snapshot.headers["content-type"], "image/jpeg")
        XCTAssertEqual(snapshot.headers["content-length"].flatMap(Int.init), snapshot.body.count)
        XCTAssertNotNil(jpegSize(snapshot.body))
        let compat = try HTTPTestClient.get("/?action=snapshot", port: rig.port)
        XCTAssertEqual(compat.status, 200, "mjpg-streamer's snapshot URL")

        let state = try HTTPTestClient.get("/state", port: rig.port)
        XCTAssertEqual(state.status, 200)
        XCTAssertEqual(state.headers["content-type"], "application/json")
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(state.body)) as? [String: Any])
        let cameras = try XCTUnwrap(json["cameras"] as? [[String: Any]])
        XCTAssertEqual(cameras.count, 1)
        XCTAssertEqual(cameras[0]["status"] as? String, "streaming")
        XCTAssertEqual(cameras[0]["captured"] as? Int, 5)
        let format = try XCTUnwrap(cameras[0]["format"] as? [String: Any])
        XCTAssertEqual(format["width"] as? Int, 320)
        XCTAssertEqual(format["pixelFormat"] as? String, "YUYV")
        let viewers = try XCTUnwrap(cameras[0]["viewers"] as? [[String: Any]])
        XCTAssertEqual(viewers.count, 1)
        let counts = viewers[0]
        let offered = try XCTUnwrap(counts["offered"] as? Int), sent = try XCTUnwrap(counts["sent"] as? Int), skipped = try XCTUnwrap(counts["skipped"] as? Int)
        XCTAssertEqual(sent, 5)
        XCTAssertEqual(offered, sent + skipped, "every picture offered was sent or skipped")

        let page = try HTTPTestClient.get("/", port: rig.port)
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(String(decoding: page.body, as: UTF8.self).contains("<img id=\"camera0\" src=\"stream\""))
    }

    /// One viewer of `/stream` while `count` frames are produced one by one: the sequence numbers and bodies it got.
    private func watch(_ rig: Rig, frames count: Int, parts: Int) throws -> (sequences: [UInt32], bodies: [[UInt8]], viewer: [String: Any]) {
        let viewer = try HTTPTestClient(port: rig.port)
        viewer.send("GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        XCTAssertEqual(viewer.head()?.status, 200)
        produce(rig, count: count, interval: 30_000)
        var sequences: [UInt32] = [], bodies: [[UInt8]] = []
        while sequences.count < parts, let part = viewer.part() {
            if let sequence = part.headers["x-frame-sequence"].flatMap(UInt32.init) {
                sequences.append(sequence)
                bodies.append(part.body)
            }
        }
        let state = try HTTPTestClient.get("/state", port: rig.port)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(state.body)) as? [String: Any])
        let camera = try XCTUnwrap((json["cameras"] as? [[String: Any]])?.first)
        XCTAssertEqual(camera["captured"] as? Int, count)
        let entry = try XCTUnwrap((camera["viewers"] as? [[String: Any]])?.first)
        return (sequences, bodies, entry)
    }

    func testDropSameFramesSkipsNRepeatsThenSendsOne() throws {
        // The simulator leaves the buffers untouched (fillsPayload: false): every frame is the
        // same picture, so every JPEG is the same.
        let rig = try makeServer(device: SimulatedDeviceConfiguration(production: .manual, fillsPayload: false)) { $0.dropSameFrames = 3 }
        let (sequences, bodies, viewer) = try watch(rig, frames: 13, parts: 4)
        XCTAssertTrue(bodies.allSatisfy { $0 == bodies[0] }, "the simulated frames are one picture")
        // ustreamer's --drop-same-frames N: at most N repeats skipped in a row, then one goes out.
        XCTAssertEqual(sequences, [0, 4, 8, 12], "frame 0, then every 4th of the repeats")
        XCTAssertEqual(viewer["sent"] as? Int, 4)
        XCTAssertEqual(viewer["skipped"] as? Int, 9, "the repeats not sent are counted as skipped: \(viewer)")
    }

    func testDropSameFramesSendsEveryChangedFrame() throws {
        // The simulator's pattern differs from frame to frame: nothing is a repeat.
        let rig = try makeServer { $0.dropSameFrames = 3 }
        let (sequences, bodies, viewer) = try watch(rig, frames: 8, parts: 8)
        XCTAssertTrue(zip(bodies.dropFirst(), bodies).allSatisfy { $0 != $1 }, "the simulated frames differ")
        XCTAssertEqual(sequences, Array(0..<8), "every changed frame goes out")
        XCTAssertEqual(viewer["skipped"] as? Int, 0)
    }

    func testASlowViewerSkipsToTheNewestWithoutHoldingUpTheOthers() throws {
        // Big frames, many of them: more than the sockets' buffers hold for the viewer that reads nothing.
        let rig = try makeServer(width: 1280, height: 720)
        let slow = try HTTPTestClient(port: rig.port)
        var small: Int32 = 4096
        setsockopt(slow.descriptor, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        slow.send("GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        let fast = try HTTPTestClient(port: rig.port)
        fast.send("GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        XCTAssertEqual(fast.head()?.status, 200)
        let frames = 200
        let reader = DispatchQueue(label: "fast viewer")
        let received = ManagedCount()
        let done = DispatchSemaphore(value: 0)
        reader.async {
            // Up to the last frame, which is always published (nothing newer passes it over).
            while let part = fast.part(), let sequence = part.headers["x-frame-sequence"].flatMap(Int.init) {
                received.increment()
                if sequence == frames - 1 { break }
            }
            done.signal()
        }
        produce(rig, count: frames, interval: 10_000)
        _ = done.wait(timeout: .now() + 60)
        let state = try HTTPTestClient.get("/state", port: rig.port)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(state.body)) as? [String: Any])
        let cameras = try XCTUnwrap(json["cameras"] as? [[String: Any]])
        let captured = cameras[0]["captured"] as? Int ?? 0, passedOver = cameras[0]["passedOver"] as? Int ?? -1
        // Every frame was taken from the driver: published, or passed over for a newer one when
        // the encoder fell behind the producer (a loaded machine; never for a viewer).
        XCTAssertEqual(captured + passedOver, frames, "the capture was not held up")
        XCTAssertEqual(received.value, captured, "the reading viewer got every published frame while the other read nothing (\(passedOver) passed over)")
        let viewers = try XCTUnwrap(cameras[0]["viewers"] as? [[String: Any]])
        let skipped = viewers.compactMap { $0["skipped"] as? Int }
        XCTAssertEqual(skipped.count, 2)
        XCTAssertGreaterThan(skipped.max() ?? 0, 0, "the viewer that does not read skips frames: \(viewers)")
        withExtendedLifetime(slow) {}
    }

    func testBadRequestsGetTheirAnswerAndTheStreamGoesOn() throws {
        let rig = try makeServer { $0.maxClients = 4; $0.requestTimeoutSeconds = 1 }
        let viewer = try HTTPTestClient(port: rig.port)
        viewer.send("GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        XCTAssertEqual(viewer.head()?.status, 200)

        XCTAssertEqual(try HTTPTestClient.get("/stream", port: rig.port, method: "POST").status, 405)
        XCTAssertEqual(try HTTPTestClient.get("/etc/passwd", port: rig.port).status, 404)
        XCTAssertEqual(try HTTPTestClient.get("/../../etc/passwd", port: rig.port).status, 404)
        let malformed = try HTTPTestClient(port: rig.port)
        malformed.send("GARBAGE\0\0 nonsense\r\n\r\n")
        XCTAssertEqual(malformed.head()?.status, 400)
        let huge = try HTTPTestClient(port: rig.port)
        huge.send("GET / HTTP/1.1\r\nHost: test\r\nX-Big: \(String(repeating: "a", count: 20_000))\r\n\r\n")
        XCTAssertEqual(huge.head()?.status, 431)
        let half = try HTTPTestClient(port: rig.port)
        half.send("GET /stream HTTP/1.1\r\nHost: te")
        XCTAssertEqual(half.head()?.status, 408, "a request that never ends is cut after the request timeout")

        // Over --max-clients: 503, and the connection is closed.
        var held: [HTTPTestClient] = []
        for _ in 0..<4 { held.append(try HTTPTestClient(port: rig.port)) }
        let extra = try HTTPTestClient.get("/snapshot", port: rig.port)
        XCTAssertEqual(extra.status, 503)
        held.removeAll()

        produce(rig, count: 3)
        for _ in 0..<3 { XCTAssertNotNil(viewer.part(), "the viewer's stream went on") }
    }

    func testBasicAuthenticationKeepsOutWhoHasNoPassword() throws {
        let rig = try makeServer { $0.credentials = ["alice:secret"] }
        let refused = try HTTPTestClient.get("/state", port: rig.port)
        XCTAssertEqual(refused.status, 401)
        XCTAssertEqual(refused.headers["www-authenticate"]?.hasPrefix("Basic"), true)
        XCTAssertEqual(try HTTPTestClient.get("/state", port: rig.port, headers: "Authorization: Basic YWxpY2U6d3Jvbmc=\r\n").status, 401)
        XCTAssertEqual(try HTTPTestClient.get("/state", port: rig.port, headers: "Authorization: Basic YWxpY2U6c2VjcmV0\r\n").status, 200)
    }

    func testAnUnplugShowsDisconnectedToTheViewers() throws {
        let rig = try makeServer { $0.reconnectTimeoutSeconds = 30 }
        let viewer = try HTTPTestClient(port: rig.port)
        viewer.send("GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        XCTAssertEqual(viewer.head()?.status, 200)
        produce(rig, count: 2)
        XCTAssertNotNil(viewer.part()?.headers["x-frame-sequence"])
        XCTAssertNotNil(viewer.part()?.headers["x-frame-sequence"])
        XCTAssertTrue(rig.backend.injectFault(.disconnect, path: Self.path))
        var placeholder: [UInt8]?
        for _ in 0..<10 {
            guard let part = viewer.part() else { break }
            if part.headers["x-frame-placeholder"] == "1" {
                placeholder = part.body
                break
            }
        }
        let picture = try XCTUnwrap(placeholder, "the viewer sees a placeholder after the unplug, on the same connection")
        let size = try XCTUnwrap(jpegSize(picture))
        XCTAssertEqual(size.0, 320, "at the last size")
        XCTAssertEqual(size.1, 180)
        let state = try HTTPTestClient.get("/state", port: rig.port)
        XCTAssertTrue(String(decoding: state.body, as: UTF8.self).contains("\"disconnected\""))
    }
}


extension LiveViewServerTests {
    /// --idle-stop: the device streams only while someone watches.
    func testIdleStopStreamsOnlyWhileSomeoneWatches() throws {
        let rig = try makeServer { $0.idleStopSeconds = 0.3 }
        func streaming() -> Bool { rig.backend.queueState(path: Self.path)?.isStreaming ?? false }
        func wait(until wanted: Bool, _ message: String) {
            for _ in 0..<200 where streaming() != wanted { usleep(25_000) }
            XCTAssertEqual(streaming(), wanted, message)
        }
        usleep(500_000)
        XCTAssertFalse(streaming(), "no viewer: the device does not stream")
        do {
            let viewer = try HTTPTestClient(port: rig.port)
            viewer.send("GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
            XCTAssertEqual(viewer.head()?.status, 200)
            wait(until: true, "the first viewer starts the stream")
            produce(rig, count: 2)
            XCTAssertNotNil(viewer.part()?.headers["x-frame-sequence"])
        }
        wait(until: false, "the device stops after the last viewer left")
        let state = try HTTPTestClient.get("/state", port: rig.port)
        XCTAssertTrue(String(decoding: state.body, as: UTF8.self).contains("\"idle\""))
    }
}

final class ManagedCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
