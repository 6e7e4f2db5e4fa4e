import FrameBridge
import FrameDump
import Foundation
import V4L2
import V4L2Simulator
import XCTest

/// Several devices in one capture (issue 15), on simulated devices: `{n}` names each output,
/// per-device options apply to their device only, one device's failure ends only its stream
/// (or, with allOrNothing, every stream), and the summary covers every device with its skew.
final class MultiCaptureTests: XCTestCase {
    private let paths = ["/dev/video10", "/dev/video11", "/dev/video12"]

    private func makeBackend() -> SimulatedV4L2Backend {
        let backend = SimulatedV4L2Backend()
        for path in paths { backend.addDevice(path: path) }
        return backend
    }

    private func options(_ backend: SimulatedV4L2Backend, directory: String, count: Int = 12) -> [CaptureOptions] {
        paths.enumerated().map { n, path in
            CaptureOptions(devicePath: path, backend: backend, count: count, outputPath: directory + "/cam{n}.raw",
                           frameTimeoutSeconds: 2).forDevice(position: n)
        }
    }

    func testEveryDeviceWritesItsFramesToItsOwnFile() throws {
        let backend = makeBackend()
        let directory = makeTemporaryDirectory(self)
        var devices = options(backend, directory: directory)
        devices[1].format = FormatOptions(width: 320, height: 180)
        let summary = try MultiCaptureSession(options: devices, stopFlag: StopFlag()).run()
        XCTAssertEqual(summary.devices.count, 3)
        XCTAssertEqual(summary.framesWritten, 36)
        XCTAssertEqual(summary.failedDevices, 0)
        for (n, device) in summary.devices.enumerated() {
            let frameSize = n == 1 ? 320 * 180 * 2 : 640 * 360 * 2
            XCTAssertEqual(device.device, paths[n])
            XCTAssertEqual(device.output, "\(directory)/cam\(n).raw")
            XCTAssertEqual(device.framesWritten, 12)
            XCTAssertNil(device.error)
            XCTAssertEqual(readFile("\(directory)/cam\(n).raw").count, 12 * frameSize, "device \(n)")
            XCTAssertEqual(backend.queueState(path: paths[n])?.bufferCount ?? 0, 0, "device \(n)'s buffers are freed")
        }
        XCTAssertEqual(summary.devices[1].width, 320, "--device-options apply to their device")
        XCTAssertNil(summary.devices[0].skew, "the first device is the reference")
        let skew = try XCTUnwrap(summary.devices[2].skew)
        XCTAssertEqual(skew.reference, paths[0])
        XCTAssertGreaterThan(skew.framesCompared, 0)
        XCTAssertGreaterThanOrEqual(skew.maximumMilliseconds, skew.medianMilliseconds)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(summary.json().utf8)) as? [String: Any])
        XCTAssertEqual((json["devices"] as? [[String: Any]])?.count, 3)
        XCTAssertEqual(json["framesWritten"] as? Int, 36)
        XCTAssertTrue(summary.render().contains("framedump: 3 devices: 36 frames"), summary.render())
    }

    func testOneDeviceFailingEndsOnlyItsStream() throws {
        let backend = makeBackend()
        let directory = makeTemporaryDirectory(self)
        let session = MultiCaptureSession(options: options(backend, directory: directory, count: 20), stopFlag: StopFlag())
        var injected = false
        session.afterFrame = { device, frames in
            if device == 1, frames == 5, !injected { injected = backend.injectFault(.disconnect, path: self.paths[1]) }
        }
        let summary = try session.run()
        XCTAssertTrue(injected)
        XCTAssertEqual(summary.failedDevices, 1)
        XCTAssertEqual(summary.devices[0].framesWritten, 20)
        XCTAssertEqual(summary.devices[2].framesWritten, 20)
        let failed = summary.devices[1]
        XCTAssertEqual(failed.framesWritten, 5)
        XCTAssertTrue(failed.error?.contains(paths[1]) == true, failed.error ?? "no error")
        XCTAssertEqual(readFile("\(directory)/cam1.raw").count, 5 * 640 * 360 * 2, "the failed device's file keeps its whole frames")
        XCTAssertEqual(readFile("\(directory)/cam2.raw").count, 20 * 640 * 360 * 2)
    }

    func testAllOrNothingStopsEveryDeviceOnTheFirstFailure() throws {
        let backend = makeBackend()
        let directory = makeTemporaryDirectory(self)
        let session = MultiCaptureSession(options: options(backend, directory: directory, count: 50), allOrNothing: true,
                                          stopFlag: StopFlag())
        var injected = false
        session.afterFrame = { device, frames in
            if device == 2, frames == 4, !injected { injected = backend.injectFault(.fatalError, path: self.paths[2]) }
        }
        let error = try XCTUnwrap(expectFrameDumpError { () throws(FrameDumpError) in try session.run() })
        XCTAssertEqual(error.kind, .runtime)
        XCTAssertTrue(error.message.contains("--all-or-nothing"), error.message)
        let partial = try XCTUnwrap(error.devicesSummary)
        for (n, device) in partial.devices.enumerated() {
            XCTAssertLessThan(device.framesWritten, 50, "device \(n) was stopped")
            XCTAssertEqual(readFile("\(directory)/cam\(n).raw").count, device.framesWritten * 640 * 360 * 2, "device \(n): whole frames")
            XCTAssertEqual(backend.queueState(path: paths[n])?.bufferCount ?? 0, 0, "device \(n)'s buffers are freed")
        }
    }

    func testSharedOutputsAndStandardOutputAreRefusedBeforeAnythingOpens() {
        let backend = makeBackend()
        var devices = paths.map { CaptureOptions(devicePath: $0, backend: backend, count: 1, outputPath: "/tmp/same.raw") }
        let shared = expectFrameDumpError { () throws(FrameDumpError) in try MultiCaptureSession(options: devices, stopFlag: StopFlag()).run() }
        XCTAssertEqual(shared?.kind, .usage)
        XCTAssertTrue(shared?.message.contains("{n}") == true, shared?.message ?? "")
        for n in devices.indices { devices[n].outputPath = "-" }
        let standardOutput = expectFrameDumpError { () throws(FrameDumpError) in try MultiCaptureSession(options: devices, stopFlag: StopFlag()).run() }
        XCTAssertEqual(standardOutput?.kind, .usage)
        XCTAssertTrue(standardOutput?.message.contains("standard output") == true, standardOutput?.message ?? "")
        devices = [paths[0], paths[0]].map { CaptureOptions(devicePath: $0, backend: backend, count: 1) }
        let twice = expectFrameDumpError { () throws(FrameDumpError) in try MultiCaptureSession(options: devices, stopFlag: StopFlag()).run() }
        XCTAssertTrue(twice?.message.contains("given twice") == true, twice?.message ?? "")
        XCTAssertFalse(fileExists("/tmp/same.raw"))
    }
}
