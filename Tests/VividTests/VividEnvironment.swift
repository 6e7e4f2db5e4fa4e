import FrameBridge
import V4L2
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The vivid set-up the integration tests expect, as `tools/test` boots it:
/// `tools/vivid-vm --vgem --scratch-disk 512 --vivid "n_devs=5 node_types=0x1,0x1,0x1,0x1,0x101
/// multiplanar=M,M,M,M,M allocators=0,0,1,0,0"`.
///
/// - /dev/video0: the device under test (vmalloc).
/// - /dev/video1: a second instance, the dmabuf exporter.
/// - /dev/video2: dma-contig allocator, which has no USERPTR support.
/// - /dev/video3: disposable, for the disconnect test.
/// - the fifth instance (node_types 0x101): a capture and an output node, for the CLI's
///   output-only device case.
/// - an ext4 scratch disk at `$VIVID_VM_SCRATCH` (/run/scratch), for the direct-I/O test.
///
/// `FRAMEBRIDGE_VIVID=1` says the suite was asked to run against vivid: then a missing or
/// wrong device fails the test. Without it (a plain `swift test` on a host without vivid)
/// the tests skip; `tools/test` never counts them on the host (`--skip VividTests`).
enum Vivid {
    static let main = "/dev/video0"
    static let exporter = "/dev/video1"
    static let contiguous = "/dev/video2"
    static let disposable = "/dev/video3"

    static var requested: Bool { ProcessInfo.processInfo.environment["FRAMEBRIDGE_VIVID"] == "1" }

    /// The planar mode the VM was booted with: 1 single-planar, 2 multi-planar.
    static var multiplanarMode: Int { Int(ProcessInfo.processInfo.environment["FRAMEBRIDGE_VIVID_MULTIPLANAR"] ?? "1") ?? 1 }
    static var expectedBufferType: BufferType { multiplanarMode == 2 ? .videoCaptureMultiplanar : .videoCapture }

    /// Opens a vivid node, failing (not skipping) when the suite was asked to run in the VM.
    static func open(_ path: String = main, file: StaticString = #filePath, line: UInt = #line) throws -> VideoDevice {
        guard requested else {
            throw XCTSkip("needs the vivid driver: run tools/test (it boots tools/vivid-vm and sets FRAMEBRIDGE_VIVID=1)")
        }
        let device: VideoDevice
        do {
            device = try VideoDevice(path: path)
        } catch {
            XCTFail("FRAMEBRIDGE_VIVID=1 but \(path) cannot be opened: \(error)", file: file, line: line)
            throw error
        }
        guard device.capabilities.driver == "vivid" else {
            XCTFail("\(path) is driven by \(device.capabilities.driver), not vivid", file: file, line: line)
            throw CaptureError(.invalidState, "not vivid")
        }
        guard device.capabilities.captureBufferType == expectedBufferType else {
            XCTFail("\(path) captures as \(String(describing: device.capabilities.captureBufferType)), but the VM was booted with multiplanar=\(multiplanarMode)",
                    file: file, line: line)
            throw CaptureError(.invalidState, "wrong planar mode")
        }
        return device
    }

    /// The deterministic settings: input 0, 640x360 YUYV (or NV12 family as asked), no OSD text.
    static func deterministic(width: UInt32 = 640, height: UInt32 = 360, fps: Double? = nil,
                              pixelFormat: FourCC = .yuyv, extraControls: [(name: String, value: Int64)] = []) -> PinConfiguration {
        PinConfiguration(input: 0, pixelFormat: pixelFormat, width: width, height: height, framesPerSecond: fps,
                         controls: [(name: "osd_text_mode", value: 2), (name: "percentage_of_dropped_buffers", value: 0)] + extraControls)
    }

    /// Captures `count` frames and returns each frame's payload bytes (planes concatenated).
    static func capture(_ device: VideoDevice, count: Int, configuration: PinConfiguration = deterministic(),
                        selection: AllocatorSelection = AllocatorSelection()) throws -> (frames: [[UInt8]], selection: AllocatorSelectionResult, statistics: CaptureStatistics, sequences: [UInt32]) {
        let pin = try CapturePin(device: device, configuration: configuration)
        let result = try pin.start(selection)
        defer { pin.stop() }
        var frames: [[UInt8]] = []
        var sequences: [UInt32] = []
        while frames.count < count {
            guard var pointer = try pin.next(timeout: .milliseconds(10_000)) else {
                throw CaptureError(.invalidState, "\(device.path): no frame within 10 s")
            }
            let bytes = try pointer.withLockedPayload { payload -> [UInt8] in
                var bytes: [UInt8] = []
                for plane in 0..<payload.planeCount { bytes += payload.plane(plane).bytes }
                return bytes
            }
            frames.append(bytes)
            sequences.append(pointer.info.sequence)
        }
        return (frames, result, pin.statistics, sequences)
    }

    /// Sets a control by its v4l2-ctl name (a button is pressed by any value).
    static func setControl(_ device: VideoDevice, _ name: String, _ value: Int64 = 1) throws {
        guard let info = try device.control(named: name) else {
            throw CaptureError(.invalidConfiguration, "\(device.path) has no control \(name)")
        }
        try device.setControlValue(info.id, value, type: info.type)
    }

    /// The size of `file`, -1 while it does not exist.
    static func fileSize(_ file: String) -> Int {
        var status = stat()
        return stat(file, &status) == 0 ? Int(status.st_size) : -1
    }

    /// Waits until process `pid` has `device` open (its start-up is over), failing after `seconds`.
    static func waitUntilOpen(pid: pid_t, _ device: String, seconds: Int64 = 30) throws {
        let start = MonotonicClock.nanoseconds()
        let directory = "/proc/\(pid)/fd"
        while true {
            let links = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            if links.contains(where: { (try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/" + $0)) == device }) { return }
            guard MonotonicClock.nanoseconds() - start < seconds * 1_000_000_000 else {
                throw CaptureError(.invalidState, "process \(pid) did not open \(device) in \(seconds) s")
            }
            usleep(20_000)
        }
    }

    /// Waits until `file` holds at least `bytes` (a capture in another process is under way),
    /// failing after `seconds`.
    static func waitFor(_ file: String, bytes: Int, seconds: Int64 = 30) throws {
        let start = MonotonicClock.nanoseconds()
        while fileSize(file) < bytes {
            guard MonotonicClock.nanoseconds() - start < seconds * 1_000_000_000 else {
                throw CaptureError(.invalidState, "\(file) did not grow to \(bytes) bytes in \(seconds) s")
            }
            usleep(20_000)
        }
    }
}
