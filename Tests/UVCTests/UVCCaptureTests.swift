import Foundation
import FrameBridge
import FrameBridgeTestSupport
import UVCCamera
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The real uvcvideo driver, fed by the emulated camera over USB/IP: enumeration, pictures,
/// controls, memory kinds, error frames, unplug and two cameras at once.
final class UVCCaptureTests: XCTestCase {
    let work = "/tmp/framedump-uvc-tests"
    /// 15 fps (the camera's second interval) leaves TCG time enough that no frame is dropped.
    let yuyv = ["--pixel-format", "YUYV", "--size", "640x360", "--fps", "15", "--quiet"]

    override func setUpWithError() throws {
        try UVC.skipUnlessRequested()
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    /// Checks that `data` holds exactly the camera's frames `first..<first+count`.
    func assertPatternFrames(_ data: Data, first: UInt32 = 0, count: Int, brightness: Int = 0, contrast: Int = 100,
                             _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(data.count, count * UVC.frameBytes, "\(what): \(data.count) bytes", file: file, line: line)
        for k in 0..<min(count, data.count / UVC.frameBytes) {
            let frame = data.subdata(in: (k * UVC.frameBytes)..<((k + 1) * UVC.frameBytes))
            let number = frame.withUnsafeBytes { FramePattern.frameNumber(yuyv: $0, width: UVC.width, height: UVC.height) }
            guard frame == UVC.pattern(first + UInt32(k), brightness: brightness, contrast: contrast) else {
                XCTFail("\(what): frame \(k) is not the camera's frame \(first + UInt32(k)) (its band reads \(number.map(String.init) ?? "nothing"))",
                        file: file, line: line)
                return
            }
        }
    }

    /// Whether `data` is the camera's frames first..<first+count exactly.
    func isPattern(_ data: Data, first: UInt32 = 0, count: Int) -> Bool {
        guard data.count == count * UVC.frameBytes else { return false }
        return (0..<count).allSatisfy { k in
            data.subdata(in: (k * UVC.frameBytes)..<((k + 1) * UVC.frameBytes)) == UVC.pattern(first + UInt32(k))
        }
    }

    /// Runs a capture that writes `output` until it holds frames 0..<count with no frame dropped:
    /// under TCG the VM sometimes drops one (the sequence shows the gap), so up to 5 tries.
    func cleanCapture(_ executable: String, _ arguments: [String], output: String, count: Int, _ what: String,
                      isClean: ((Data) -> Bool)? = nil) throws -> Data {
        var data = Data()
        for attempt in 1...5 {
            let run = try UVC.run(executable, arguments)
            XCTAssertEqual(run.status, 0, "\(what): \(run.stderr)")
            data = try UVC.read(output)
            if isClean?(data) ?? isPattern(data, count: count) { return data }
            print("uvc: \(what): attempt \(attempt) was not frames 0..<\(count) (a dropped frame); trying again")
        }
        return data
    }

    func testEnumerationFormatsControlsAndMetadataNode() throws {
        let camera = try EmulatedCamera()
        let device = try VideoDevice(path: camera.node)
        XCTAssertEqual(device.capabilities.driver, "uvcvideo")
        XCTAssertTrue(device.capabilities.card.hasPrefix("FrameBridge UVC Camera"), device.capabilities.card)
        XCTAssertEqual(device.capabilities.busInfo, "usb-vhci_hcd.0-1")
        let formats = try device.formats(.videoCapture)
        XCTAssertEqual(formats.map(\.pixelFormat), [.yuyv, .mjpeg])
        for format in formats {
            let sizes = try device.frameSizes(format.pixelFormat)
            XCTAssertEqual(sizes.count, 2, "\(format.pixelFormat): \(sizes)")
            let intervals = try device.frameIntervals(format.pixelFormat, width: 640, height: 360)
            XCTAssertEqual(intervals.count, 2, "\(format.pixelFormat): \(intervals)")
        }
        let controls = try device.controls()
        let brightness = try XCTUnwrap(controls.first { $0.name == "Brightness" || $0.name.lowercased() == "brightness" })
        XCTAssertEqual(brightness.minimum, -64)
        XCTAssertEqual(brightness.maximum, 64)
        XCTAssertEqual(brightness.defaultValue, 0)
        let contrast = try XCTUnwrap(controls.first { $0.name.lowercased() == "contrast" })
        XCTAssertEqual(contrast.maximum, 200)
        XCTAssertEqual(contrast.defaultValue, 100)

        let metadata = try XCTUnwrap(camera.metadataNode(), "uvcvideo made no metadata node")
        let meta = try VideoDevice(path: metadata)
        XCTAssertTrue(meta.capabilities.deviceCapabilities.contains(.metaCapture))
        XCTAssertFalse(meta.capabilities.canCapture)

        let list = try UVC.run(UVC.framedump, ["list"])
        XCTAssertEqual(list.status, 0, list.stderr)
        let captureLine = try XCTUnwrap(list.text.split(separator: "\n").first { $0.hasPrefix(camera.node + ":") })
        XCTAssertTrue(captureLine.contains("driver uvcvideo") && captureLine.contains(": capture"), String(captureLine))
        let metaLine = try XCTUnwrap(list.text.split(separator: "\n").first { $0.hasPrefix(metadata + ":") })
        XCTAssertTrue(metaLine.contains("metadata capture") && metaLine.contains("UVCH"), String(metaLine))

        let info = try UVC.run(UVC.framedump, ["info", "-d", camera.node])
        XCTAssertEqual(info.status, 0, info.stderr)
        for needle in ["'YUYV'", "'MJPG'", "640x360", "320x180", "1/30 s", "1/15 s", "brightness", "contrast"] {
            XCTAssertTrue(info.text.lowercased().contains(needle.lowercased()), "info lacks \(needle):\n\(info.text)")
        }
        print("uvc: enumerated \(camera.node) (\(device.capabilities.card)), metadata node \(metadata)")
    }

    func testYUYVFramesEqualThePatternAndV4L2Ctl() throws {
        let camera = try EmulatedCamera()
        let output = "\(work)/framedump.raw"
        let ours = try cleanCapture(UVC.framedump, ["capture", "-d", camera.node, "-n", "20", "-o", output] + yuyv,
                                    output: output, count: 20, "framedump")
        assertPatternFrames(ours, count: 20, "framedump")
        let theirs = try cleanCapture("/usr/bin/v4l2-ctl", ["-d", camera.node, "--set-fmt-video=width=640,height=360,pixelformat=YUYV",
                                                            "--set-parm=15", "--stream-mmap", "--stream-count=20", "--stream-to=\(work)/v4l2-ctl.raw"],
                                      output: "\(work)/v4l2-ctl.raw", count: 20, "v4l2-ctl")
        assertPatternFrames(theirs, count: 20, "v4l2-ctl")
        XCTAssertTrue(ours == theirs, "framedump's frames differ from v4l2-ctl's")
        print("uvc: 20 YUYV frames, identical to the pattern and to v4l2-ctl --stream-to")
    }

    func testMJPEGFramesEqualWhatTheCameraSent() throws {
        let camera = try EmulatedCamera()
        let encoder = try JPEGEncoder()
        for size in [(640, 360), (320, 180)] {
            let output = "\(work)/mjpeg-\(size.0).raw"
            let sent = try (0..<20).map { Data(try FramePattern.jpeg(width: size.0, height: size.1, frameNumber: UInt32($0), encoder: encoder)) }
            // The camera's JPEGs 0..<20 exactly; a loaded VM may drop one, so each tool may try again.
            let isSent: (Data) -> Bool = { UVC.splitJPEGs($0) == sent }
            let ours = try cleanCapture(UVC.framedump, ["capture", "-d", camera.node, "-n", "20", "--pixel-format", "MJPG",
                                                        "--size", "\(size.0)x\(size.1)", "--fps", "15", "--quiet", "-o", output],
                                        output: output, count: 20, "framedump MJPEG \(size)", isClean: isSent)
            let jpegs = UVC.splitJPEGs(ours)
            XCTAssertEqual(jpegs.count, 20, "\(size): \(jpegs.count) JPEGs")
            for (k, jpeg) in jpegs.enumerated() where k < sent.count {
                XCTAssertTrue(jpeg == sent[k], "\(size): JPEG \(k) (\(jpeg.count) bytes) differs from the camera's (\(sent[k].count) bytes)")
            }
            let theirs = try cleanCapture("/usr/bin/v4l2-ctl", ["-d", camera.node, "--set-fmt-video=width=\(size.0),height=\(size.1),pixelformat=MJPG",
                                                                "--set-parm=15", "--stream-mmap", "--stream-count=20", "--stream-to=\(work)/ctl-\(size.0).raw"],
                                          output: "\(work)/ctl-\(size.0).raw", count: 20, "v4l2-ctl MJPEG \(size)", isClean: isSent)
            XCTAssertTrue(ours == theirs, "\(size): framedump differs from v4l2-ctl")
            let ffmpeg = try UVC.run("/usr/bin/ffprobe", ["-v", "error", "-f", "mjpeg", "-count_frames", "-select_streams", "v:0",
                                                          "-show_entries", "stream=nb_read_frames,width,height", "-of", "csv=p=0", output])
            XCTAssertEqual(ffmpeg.status, 0, ffmpeg.stderr)
            XCTAssertEqual(ffmpeg.text.trimmingCharacters(in: .whitespacesAndNewlines), "\(size.0),\(size.1),20")
        }
        print("uvc: MJPEG at 640x360 and 320x180, 20 frames each, byte-identical to what the camera sent and to v4l2-ctl")
    }

    func testControlsTakeEffectInTheFrames() throws {
        let camera = try EmulatedCamera()
        let output = "\(work)/controls.raw"
        let run = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "3", "-o", output,
                                              "--set-ctrl", "brightness=40", "--set-ctrl", "contrast=150"] + yuyv)
        XCTAssertEqual(run.status, 0, run.stderr)
        let data = try UVC.read(output)
        XCTAssertEqual(data.count, 3 * UVC.frameBytes)
        for k in 0..<min(3, data.count / UVC.frameBytes) {
            let frame = data.subdata(in: (k * UVC.frameBytes)..<((k + 1) * UVC.frameBytes))
            let number = try XCTUnwrap(frame.withUnsafeBytes { FramePattern.frameNumber(yuyv: $0, width: UVC.width, height: UVC.height) })
            XCTAssertTrue(frame == UVC.pattern(number, brightness: 40, contrast: 150), "frame \(k) is not the camera's frame \(number) at brightness 40, contrast 150")
            XCTAssertFalse(frame == UVC.pattern(number), "frame \(k) shows no effect of the controls")
        }
        let device = try VideoDevice(path: camera.node)
        let brightness = try XCTUnwrap(device.controls().first { $0.name.lowercased() == "brightness" })
        XCTAssertEqual(try device.controlValue(brightness.id), 40, "the camera's GET_CUR")
        let bad = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "1", "--set-ctrl", "brightness=100"] + yuyv)
        XCTAssertEqual(bad.status, 2, "out of range: \(bad.stderr)")
        XCTAssertTrue(bad.stderr.contains("brightness"), bad.stderr)
    }

    func testEveryMemoryKindCaptures() throws {
        let camera = try EmulatedCamera()
        var cases: [(String, [String])] = [("mmap", ["--memory", "mmap"]), ("userptr", ["--memory", "userptr"])]
        XCTAssertTrue(FileManager.default.fileExists(atPath: "/dev/dri/card0"), "boot the VM with --vgem")
        cases.append(("dmabuf-vgem", ["--memory", "dmabuf", "--dmabuf-from", "vgem"]))
        XCTAssertTrue(FileManager.default.fileExists(atPath: "/dev/video0"), "the VM's vivid instance (the dmabuf exporter) is missing")
        cases.append(("dmabuf-vivid", ["--memory", "dmabuf", "--dmabuf-from", "/dev/video0"]))
        for (name, options) in cases {
            let output = "\(work)/\(name).raw"
            let data = try cleanCapture(UVC.framedump, ["capture", "-d", camera.node, "-n", "10", "-o", output] + yuyv + options,
                                        output: output, count: 10, name)
            assertPatternFrames(data, count: 10, name)
            print("uvc: --memory \(name): 10 frames equal to the pattern")
        }
    }

    func testFramingOfUncompressedAndCompressedFormats() throws {
        let camera = try EmulatedCamera()
        let run = try UVC.run(UVC.framedump, ["framing", "-d", camera.node, "--pixel-format", "YUYV", "--size", "640x360", "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let framing = try XCTUnwrap(try UVC.json(run)["framing"] as? [String: Any])
        let item = try XCTUnwrap((framing["items"] as? [[String: Any]])?.first)
        XCTAssertEqual(item["memoryKinds"] as? [String], ["mmap", "userptr", "dmabuf"])
        XCTAssertEqual(item["frameSizeMinimum"] as? Int, 460_800)
    }

    /// The frame numbers in a raw YUYV capture, checking that each frame is the pattern.
    func frameNumbers(_ data: Data, _ what: String, file: StaticString = #filePath, line: UInt = #line) -> [UInt32] {
        (0..<(data.count / UVC.frameBytes)).compactMap { k in
            let frame = data.subdata(in: (k * UVC.frameBytes)..<((k + 1) * UVC.frameBytes))
            let number = frame.withUnsafeBytes { FramePattern.frameNumber(yuyv: $0, width: UVC.width, height: UVC.height) }
            XCTAssertTrue(number.map { frame == UVC.pattern($0) } ?? false, "\(what): frame \(k) is no frame of the camera", file: file, line: line)
            return number
        }
    }

    func testErrorFramesAreDroppedByDefaultAndFlaggedWithNodrop() throws {
        // Frames 4, 8, 12, ... (counted from 1; numbers 3, 7, 11, ...) carry the ERR bit.
        // uvcvideo reads its nodrop parameter when a camera is plugged in, so each setting gets
        // a camera of its own. A loaded VM may drop other frames too; the sequence numbers and
        // the frames' own numbers say which, so every count is checked exactly.
        let isError: (UInt32) -> Bool = { ($0 + 1) % 4 == 0 }
        defer { try? UVC.writeParameter(UVC.nodropParameter, "0") }
        try UVC.writeParameter(UVC.nodropParameter, "0")
        var camera = try EmulatedCamera(["--error-every", "4"])
        // uvcvideo's default (nodrop=0): an error frame is requeued, never delivered; the
        // sequence number shows the gap.
        var run = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "9", "-o", "\(work)/dropped.raw", "--json"] + yuyv)
        XCTAssertEqual(run.status, 0, run.stderr)
        var summary = try UVC.json(run)
        var numbers = frameNumbers(try UVC.read("\(work)/dropped.raw"), "nodrop=0")
        XCTAssertEqual(numbers.count, 9)
        XCTAssertFalse(numbers.contains(where: isError), "uvcvideo delivered an ERR frame: \(numbers)")
        XCTAssertEqual(summary["errorFrames"] as? Int, 0)
        XCTAssertEqual(summary["framesDropped"] as? Int, Int(numbers.last ?? 0) + 1 - numbers.count, "drops = the gaps in \(numbers)")
        XCTAssertGreaterThanOrEqual(numbers.last ?? 0, 9, "two ERR frames fall in the span")
        camera.unplug()

        // nodrop=1: uvcvideo delivers them with V4L2_BUF_FLAG_ERROR; framedump counts them and
        // skips or delivers them as asked.
        try UVC.writeParameter(UVC.nodropParameter, "1")
        camera = try EmulatedCamera(["--error-every", "4"])
        run = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "9", "-o", "\(work)/skipped.raw",
                                          "--error-frames", "skip", "--json"] + yuyv)
        XCTAssertEqual(run.status, 0, run.stderr)
        summary = try UVC.json(run)
        numbers = frameNumbers(try UVC.read("\(work)/skipped.raw"), "nodrop=1, skip")
        XCTAssertEqual(numbers.count, 9)
        XCTAssertFalse(numbers.contains(where: isError), "an ERR frame was written: \(numbers)")
        let skipped = summary["framesSkipped"] as? Int ?? -1
        XCTAssertGreaterThanOrEqual(skipped, 1, "no error frame was flagged")
        XCTAssertEqual(summary["errorFrames"] as? Int, skipped)
        XCTAssertEqual(skipped + (summary["framesDropped"] as? Int ?? 0), Int(numbers.last ?? 0) + 1 - numbers.count,
                       "skipped + dropped = the gaps in \(numbers)")

        run = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "8", "-o", "\(work)/delivered.raw",
                                          "--error-frames", "deliver", "--json"] + yuyv)
        XCTAssertEqual(run.status, 0, run.stderr)
        summary = try UVC.json(run)
        numbers = frameNumbers(try UVC.read("\(work)/delivered.raw"), "nodrop=1, deliver")
        XCTAssertEqual(numbers.count, 8)
        let delivered = numbers.filter(isError).count
        XCTAssertGreaterThanOrEqual(delivered, 1, "no ERR frame delivered: \(numbers)")
        XCTAssertEqual(summary["errorFrames"] as? Int, delivered, "every delivered ERR frame is counted, no other: \(numbers)")
        XCTAssertEqual(summary["framesSkipped"] as? Int, 0)
        print("uvc: ERR-bit frames: dropped by uvcvideo by default; with nodrop=1 \(skipped) flagged and skipped, \(delivered) flagged and delivered")
    }

    func testUnplugMidCaptureKeepsWholeFramesAndSaysSo() throws {
        let camera = try EmulatedCamera(["--unplug-after", "12"])
        let output = "\(work)/unplug.raw"
        let run = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "40", "-o", output, "--json"] + yuyv)
        XCTAssertEqual(run.status, 1, run.stderr)
        let lines = run.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, run.stderr)
        XCTAssertTrue(run.stderr.contains(camera.node) && run.stderr.contains("disconnected"), run.stderr)
        let data = try UVC.read(output)
        XCTAssertEqual(data.count % UVC.frameBytes, 0, "a partial frame in the output")
        XCTAssertGreaterThan(data.count, 0)
        // Whole frames of the camera's, rising; a loaded VM may drop one, and the summary
        // printed on the failure counts every gap.
        let summary = try UVC.json(run)
        let numbers = frameNumbers(data, "frames before the unplug")
        XCTAssertTrue(zip(numbers, numbers.dropFirst()).allSatisfy { $0 < $1 }, "\(numbers)")
        XCTAssertLessThanOrEqual(numbers.last ?? 99, 11, "the camera sent frames 0...11 only")
        XCTAssertEqual(summary["framesWritten"] as? Int, numbers.count)
        XCTAssertEqual(summary["framesDropped"] as? Int, Int((numbers.last ?? 0) + 1) - numbers.count, "drops = the gaps in \(numbers)")
        XCTAssertTrue((summary["error"] as? String)?.contains("disconnected") ?? false, "\(summary)")
        _ = camera.waitForExit()
        print("uvc: unplug after 12 frames: \(data.count / UVC.frameBytes) whole frames kept; framedump said: \(run.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
    }

    func testLibraryPinAfterUnplugReleasesEverything() throws {
        // Counted before the camera starts and after it has gone: its pipes to this process close
        // when it exits (swift-subprocess reads them to their end), whatever the pin does.
        let before = (descriptors: ProcessResources.openDescriptors(), mappings: ProcessResources.deviceMappings())
        let camera = try EmulatedCamera(["--unplug-after", "8"])
        var delivered = 0
        var failure: CaptureError?
        do {
            let device = try VideoDevice(path: camera.node)
            let pin = try CapturePin(device: device, configuration: PinConfiguration(
                pixelFormat: .yuyv, width: 640, height: 360, framesPerSecond: 15))
            _ = try pin.start(AllocatorSelection(candidates: [UserPointerAllocator()]))
            XCTAssertGreaterThan(ProcessResources.openDescriptors(), before.descriptors)
            do {
                while delivered < 100 {
                    guard var frame = try pin.next(timeout: .milliseconds(5000)) else { break }
                    try frame.withLockedPayload { payload in
                        XCTAssertEqual(payload.plane(0).byteCount, UVC.frameBytes)
                    }
                    delivered += 1
                }
            } catch {
                failure = error
            }
            pin.stop()
        }
        _ = camera.waitForExit()
        let after = (descriptors: ProcessResources.openDescriptors(), mappings: ProcessResources.deviceMappings())
        XCTAssertEqual(failure?.kind, .disconnected, "the pin's error: \(String(describing: failure))")
        XCTAssertGreaterThanOrEqual(delivered, 1)
        XCTAssertLessThanOrEqual(delivered, 8)
        XCTAssertEqual(after.descriptors, before.descriptors, "descriptors before \(before.descriptors), after \(after.descriptors)")
        XCTAssertLessThanOrEqual(after.mappings, before.mappings, "mappings before \(before.mappings), after \(after.mappings)")
        print("uvc: library unplug: \(delivered) frames, then \(failure?.kind.rawValue ?? "none"); fds \(before.descriptors) -> \(after.descriptors), mappings \(before.mappings) -> \(after.mappings)")
    }

    func testReconnectGoesOnIntoTheSameOutput() throws {
        let first = try EmulatedCamera(["--unplug-after", "10"])
        let output = "\(work)/reconnect.raw"
        let capture = try ChildProcess(UVC.framedump, ["capture", "-d", first.node, "-n", "25", "-o", output, "--json",
                                                     "--reconnect", "--reconnect-timeout", "120"] + yuyv)
        _ = first.waitForExit()
        let second = try EmulatedCamera()
        let run = capture.wait()
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try UVC.json(run)
        XCTAssertEqual(summary["reconnects"] as? Int, 1)
        XCTAssertGreaterThan(summary["disconnectedSeconds"] as? Double ?? 0, 0)
        XCTAssertEqual(summary["framesWritten"] as? Int, 25)
        let data = try UVC.read(output)
        XCTAssertEqual(data.count, 25 * UVC.frameBytes)
        // Frames of the first camera (numbers 0...9), then of the second, whose stream starts
        // again at 0: the numbers rise, fall once at the reconnect, and rise again. A loaded VM
        // may drop a frame; the summary counts every gap.
        let numbers = frameNumbers(data, "--reconnect")
        let fall = try XCTUnwrap(numbers.indices.dropFirst().first { numbers[$0] <= numbers[$0 - 1] }, "no reconnect in \(numbers)")
        let before = Array(numbers[..<fall]), after = Array(numbers[fall...])
        XCTAssertTrue(zip(after, after.dropFirst()).allSatisfy { $0 < $1 }, "\(numbers)")
        XCTAssertLessThanOrEqual(before.last ?? 99, 9, "the first camera sent frames 0...9 only")
        let gaps = Int(before.last! + 1) - before.count + Int(after.last! + 1) - after.count
        XCTAssertEqual(summary["framesDropped"] as? Int, gaps, "drops = the gaps in \(numbers)")
        print("uvc: --reconnect: 10 frames, unplug, \(second.node) came back, 15 more into the same file; gap \(summary["disconnectedSeconds"] ?? "?") s")
    }

    func testTwoCamerasAtOnce() throws {
        let a = try EmulatedCamera(port: 0)
        let b = try EmulatedCamera(port: 1, ["--serial", "FB-UVC-B"])
        XCTAssertNotEqual(a.node, b.node)
        let runA = try ChildProcess(UVC.framedump, ["capture", "-d", a.node, "-n", "15", "-o", "\(work)/a.raw"] + yuyv)
        let runB = try ChildProcess(UVC.framedump, ["capture", "-d", b.node, "-n", "15", "-o", "\(work)/b.raw"] + yuyv)
        let resultA = runA.wait(), resultB = runB.wait()
        XCTAssertEqual(resultA.status, 0, resultA.stderr)
        XCTAssertEqual(resultB.status, 0, resultB.stderr)
        // Every frame is its camera's; both rise without repeats (a loaded VM may drop one).
        for (name, file) in [("port 0", "a"), ("port 1", "b")] {
            let numbers = frameNumbers(try UVC.read("\(work)/\(file).raw"), name)
            XCTAssertEqual(numbers.count, 15, name)
            XCTAssertTrue(zip(numbers, numbers.dropFirst()).allSatisfy { $0 < $1 }, "\(name): \(numbers)")
        }
        XCTAssertEqual(try VideoDevice(path: b.node).capabilities.busInfo, "usb-vhci_hcd.0-2")
        print("uvc: two cameras at once (\(a.node), \(b.node)): 15 frames each, every one its own camera's")
    }
}

/// Allocator selection on uvcvideo's framing: a candidate that does not fit is rejected with a
/// reason and never initialized, and the default (MMAP) streams.
final class UVCSelectionTests: XCTestCase {
    func testUnfitCandidatesAreRejectedAndTheFallbackStreams() throws {
        let camera = try EmulatedCamera()
        for (format, planeBytes) in [(FourCC.yuyv, 460_800), (FourCC.mjpeg, 460_800)] {
            let device = try VideoDevice(path: camera.node)
            let pin = try CapturePin(device: device, configuration: PinConfiguration(
                pixelFormat: format, width: 640, height: 360, framesPerSecond: 15))
            // User memory too small for the plane (for MJPEG: below sizeimage, the bound of a
            // compressed frame), and device memory for a CPU consumer.
            let small = SpyAllocator(UserPointerAllocator(planeSizes: [planeBytes / 2]))
            let deviceMemory = SpyAllocator(DMABufAllocator(exporter: DRMDumbBufferExporter()))
            let result = try pin.start(AllocatorSelection(candidates: [small, deviceMemory]))
            defer { pin.stop() }
            XCTAssertTrue(result.fellBackToDefault, "\(format)")
            XCTAssertEqual(result.rejections.count, 2, "\(result.rejections)")
            XCTAssertTrue(result.rejections.allSatisfy { !$0.reason.isEmpty })
            XCTAssertFalse(small.steps.contains("initialize"), "a rejected allocator was initialized: \(small.steps)")
            XCTAssertFalse(deviceMemory.steps.contains("initialize"), "a rejected allocator was initialized")
            XCTAssertTrue(result.chosen.name.contains("kernel-pool"), result.chosen.name)
            var frames = 0
            while frames < 3 {
                guard var frame = try pin.next(timeout: .milliseconds(5000)) else { break }
                try frame.withLockedPayload { payload in XCTAssertGreaterThan(payload.plane(0).byteCount, 0) }
                frames += 1
            }
            XCTAssertEqual(frames, 3, "\(format): the fallback did not stream")
            print("uvc: \(format) selection: \(result.rejections.map(\.description).joined(separator: "; ")); fell back to \(result.chosen.name), streamed")
        }
    }
}
