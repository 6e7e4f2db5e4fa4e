import Foundation
import FrameBridgeTestSupport
import UVCCamera
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The set-up the uvcvideo suite expects, as `tools/test` boots it:
/// `tools/vivid-vm --uvc --vgem --vivid "n_devs=1 node_types=0x1"`. Each test plugs in its own
/// emulated camera(s) (the `uvc-camera` built next to the test bundle) and unplugs them.
///
/// `FRAMEBRIDGE_UVC=1` says the suite was asked to run in the VM: then a missing vhci_hcd,
/// uvcvideo or camera fails the test. Without it the tests skip, and tools/test never counts
/// them on the host.
enum UVC {
    static var requested: Bool { ProcessInfo.processInfo.environment["FRAMEBRIDGE_UVC"] == "1" }

    static var binDirectory: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    }
    static var camera: String { binDirectory + "/uvc-camera" }
    static var framedump: String { binDirectory + "/framedump" }

    static let width = 640, height = 360
    static var frameBytes: Int { width * height * 2 }

    /// Path of the uvcvideo `nodrop` parameter (writable at run time).
    static let nodropParameter = "/sys/module/uvcvideo/parameters/nodrop"

    /// Outside the VM run these tests skip (tools/test counts a skip there as a failure).
    static func skipUnlessRequested() throws {
        guard requested else {
            throw XCTSkip("needs uvcvideo and vhci_hcd: run tools/test (it boots tools/vivid-vm --uvc and sets FRAMEBRIDGE_UVC=1)")
        }
    }

    static func writeParameter(_ path: String, _ value: String) throws {
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { throw CameraFailure("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard value.withCString({ write(fd, $0, strlen($0)) }) >= 0 else {
            throw CameraFailure("write \(path): \(String(cString: strerror(errno)))")
        }
    }

    static func read(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// The camera's YUYV frame `number` at the default size and controls.
    static func pattern(_ number: UInt32, width: Int = width, height: Int = height,
                        brightness: Int = FramePattern.defaultBrightness, contrast: Int = FramePattern.defaultContrast) -> Data {
        Data(FramePattern.yuyv(width: width, height: height, frameNumber: number, brightness: brightness, contrast: contrast))
    }

    /// Splits concatenated JPEGs (raw MJPEG output) at their SOI markers.
    static func splitJPEGs(_ data: Data) -> [Data] {
        let bytes = [UInt8](data)
        var starts: [Int] = []
        var i = 0
        while i + 2 < bytes.count {
            if bytes[i] == 0xFF && bytes[i + 1] == 0xD8 && bytes[i + 2] == 0xFF { starts.append(i) }
            i += 1
        }
        // FF D8 never occurs inside entropy-coded data (an FF there is followed by 00 or RSTn),
        // so every SOI starts a frame, also after a truncated one.
        return starts.enumerated().map { (k, start) in
            let end = k + 1 < starts.count ? starts[k + 1] : bytes.count
            return Data(bytes[start..<end])
        }
    }

    /// Runs a program to its end.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String]) throws -> ChildProcess.Result {
        try ChildProcess.run(executable, arguments)
    }

    static func json(_ result: ChildProcess.Result, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        try result.jsonObject(file: file, line: line)
    }
}

struct CameraFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One emulated camera plugged into vhci_hcd: started in `init`, unplugged by `unplug()` or
/// when it goes away.
final class EmulatedCamera {
    let port: Int
    let node: String
    private var process: ChildProcess?
    private(set) var result: ChildProcess.Result?

    init(port: Int = 0, _ arguments: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws {
        try UVC.skipUnlessRequested()
        guard access(UVC.camera, X_OK) == 0 else {
            XCTFail("uvc-camera not built at \(UVC.camera)", file: file, line: line)
            throw CameraFailure("no uvc-camera")
        }
        self.port = port
        let process = try ChildProcess(UVC.camera, ["--port", "\(port)"] + arguments)
        guard let node = process.readLine(timeoutSeconds: 90) else {
            process.send(SIGTERM)
            let result = process.wait()
            XCTFail("uvc-camera --port \(port) \(arguments.joined(separator: " ")) gave no node (exit \(result.status)): \(result.stderr)",
                    file: file, line: line)
            throw CameraFailure("no node")
        }
        self.process = process
        self.node = node
    }

    /// The sysfs entry of the node, present while the camera is plugged in.
    var sysfsEntry: String { "/sys/class/video4linux/" + (node.split(separator: "/").last.map(String.init) ?? node) }

    /// The metadata node uvcvideo made beside the capture node (sysfs index 1, same USB interface).
    func metadataNode() -> String? {
        guard let device = realpath(sysfsEntry + "/device", nil).map({ p -> String in defer { free(p) }; return String(cString: p) }),
              let names = try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/video4linux") else { return nil }
        for name in names.sorted() {
            let base = "/sys/class/video4linux/\(name)"
            guard let other = realpath(base + "/device", nil).map({ p -> String in defer { free(p) }; return String(cString: p) }),
                  other == device,
                  let index = try? String(contentsOfFile: base + "/index", encoding: .utf8),
                  index.trimmingCharacters(in: .whitespacesAndNewlines) == "1" else { continue }
            return "/dev/\(name)"
        }
        return nil
    }

    /// Waits for the camera to unplug itself (--unplug-after) and returns its exit.
    func waitForExit() -> ChildProcess.Result {
        if let process {
            result = process.wait()
            self.process = nil
            waitUntilGone()
        }
        return result!
    }

    /// Pulls the cable: ends the camera, then waits until uvcvideo has removed the node.
    func unplug() {
        process?.send(SIGTERM)
        _ = waitForExit()
    }

    private func waitUntilGone() {
        for _ in 0..<200 where access(sysfsEntry, F_OK) == 0 { usleep(50_000) }
        // vhci_hcd frees the port shortly after the disconnect.
        usleep(300_000)
    }

    deinit { unplug() }
}
