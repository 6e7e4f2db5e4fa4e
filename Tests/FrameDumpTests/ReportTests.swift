import FrameBridge
import FrameDump
import Foundation
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class ReportTests: XCTestCase {
    // MARK: - list

    func testListIsSortedByNumberWithCaptureFlag() throws {
        let backend = SimulatedV4L2Backend()
        backend.addDevice(path: "/dev/video10", configuration: SimulatedDeviceConfiguration(card: "Ten"))
        backend.addDevice(path: "/dev/video2", configuration: SimulatedDeviceConfiguration(multiplanar: true, card: "Two"))
        backend.addDevice(path: "/dev/video3", configuration: SimulatedDeviceConfiguration(canCapture: false, card: "Output"))
        backend.addNonV4L2File(path: "/dev/video4")
        let entries = DeviceListing.list(paths: ["/dev/video10", "/dev/video4", "/dev/video3", "/dev/video2"], backend: backend)
        XCTAssertEqual(entries.map(\.path), ["/dev/video2", "/dev/video3", "/dev/video4", "/dev/video10"])
        XCTAssertEqual(entries.map(\.number), [2, 3, 4, 10])
        XCTAssertEqual(entries[0].card, "Two")
        XCTAssertEqual(entries[0].driver, "v4l2sim")
        XCTAssertEqual(entries[0].busInfo, "platform:v4l2sim-000")
        XCTAssertTrue(entries[0].canCapture)
        XCTAssertTrue(entries[0].capabilities.contains("Video Capture Multiplanar"), "\(entries[0].capabilities)")
        XCTAssertFalse(entries[1].canCapture)
        XCTAssertNotNil(entries[2].error)
        XCTAssertTrue(entries[2].error?.contains("VIDIOC_QUERYCAP") ?? false, entries[2].error ?? "")
        XCTAssertTrue(entries[3].canCapture)
        let text = DeviceListing.render(entries)
        XCTAssertTrue(text.contains("/dev/video2: Two (driver v4l2sim, bus platform:v4l2sim-000): capture"), text)
        XCTAssertTrue(text.contains("/dev/video3: Output (driver v4l2sim, bus platform:v4l2sim-000): no capture"), text)
        let decoded = try FrameDumpJSON.decode([DeviceListEntry].self, from: FrameDumpJSON.encode(entries))
        XCTAssertEqual(decoded, entries)
    }

    func testVideoDevicePathsOfADirectory() throws {
        let directory = makeTemporaryDirectory(self)
        for name in ["video10", "video0", "video2", "videoX", "vbi0", "video"] {
            XCTAssertTrue(FileManager.default.createFile(atPath: directory + "/" + name, contents: nil))
        }
        XCTAssertEqual(DeviceListing.videoDevicePaths(directory: directory),
                       [directory + "/video0", directory + "/video2", directory + "/video10"])
    }

    // MARK: - info

    func testInfoReportsFormatsSizesIntervalsAndControls() throws {
        let backend = makeBackend()
        let report = try FrameDumpCommands.info(path: simulatedPath, backend: backend)
        XCTAssertEqual(report.driver, "v4l2sim")
        XCTAssertEqual(report.card, "Simulated Camera")
        XCTAssertEqual(report.backend, "simulator")
        XCTAssertTrue(report.canCapture)
        XCTAssertEqual(report.captureBufferType, "video-capture")
        XCTAssertEqual(report.inputs.count, 4)
        XCTAssertEqual(report.currentInput, 0)
        XCTAssertEqual(report.currentFormat?.pixelFormat, .yuyv)
        XCTAssertEqual(report.currentFormat?.width, 640)
        XCTAssertEqual(report.currentFormat?.planes.first?.bytesPerLine, 1280)
        XCTAssertEqual(report.currentFormat?.frameInterval, Fraction(1, 30))
        XCTAssertEqual(report.formats.map(\.pixelFormat.description), ["YUYV", "RGB3", "NV12"])
        let yuyv = report.formats[0]
        XCTAssertEqual(yuyv.sizes.map(\.text), ["320x180", "640x360", "640x480", "1280x720", "1920x1080"])
        XCTAssertEqual(yuyv.sizes[1].kind, "discrete")
        XCTAssertEqual(yuyv.sizes[1].intervals.map(\.fps), [30, 60])
        XCTAssertEqual(yuyv.sizes[1].intervals.first?.numerator, 1)
        XCTAssertEqual(yuyv.sizes[1].intervals.first?.denominator, 30)

        let osd = try XCTUnwrap(report.controls.first { $0.commandLineName == "osd_text_mode" })
        XCTAssertEqual(osd.type, "menu")
        XCTAssertFalse(osd.menuItems.isEmpty)
        XCTAssertNotNil(osd.value)
        let brightness = try XCTUnwrap(report.controls.first { $0.commandLineName == "brightness" })
        XCTAssertEqual(brightness.type, "int")
        XCTAssertLessThan(brightness.minimum, brightness.maximum)
        XCTAssertEqual(brightness.value, brightness.defaultValue)
        let button = try XCTUnwrap(report.controls.first { $0.type == "button" })
        XCTAssertNil(button.value, "a button has no value")
        XCTAssertFalse(report.controls.contains { $0.type == "ctrl_class" })

        let decoded = try FrameDumpJSON.decode(DeviceReport.self, from: FrameDumpJSON.encode(report))
        XCTAssertEqual(decoded, report)
        let text = report.render()
        XCTAssertTrue(text.contains("Card type     : Simulated Camera"), text)
        XCTAssertTrue(text.contains("'YUYV' (YUYV 4:2:2)"), text)
        XCTAssertTrue(text.contains("Size: discrete 640x360"), text)
        XCTAssertTrue(text.contains("Interval: discrete 1/30 s (30 fps)"), text)
        XCTAssertTrue(text.contains("osd_text_mode (menu)"), text)
    }

    func testInfoOfMissingDeviceNamesIt() {
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try FrameDumpCommands.info(path: "/dev/video9", backend: makeBackend())
        }
        XCTAssertTrue(error?.message.hasPrefix("/dev/video9: open failed: ENOENT") ?? false, error?.message ?? "")
    }

    // MARK: - framing

    func testFramingSinglePlanar() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(minimumBuffers: 3))
        let report = try FrameDumpCommands.framing(path: simulatedPath, backend: backend,
                                                   format: FormatOptions(pixelFormat: .yuyv, width: 320, height: 180))
        XCTAssertEqual(report.framing.countItems, 1)
        let item = report.framing.items[0]
        XCTAssertEqual(item.memoryKinds, [.mmap, .userPointer, .dmabuf])
        XCTAssertEqual(item.framesMinimum, 3)
        XCTAssertEqual(item.framesMaximum, 32)
        XCTAssertEqual(item.frameSizeMinimum, 320 * 180 * 2)
        XCTAssertEqual(item.bytesPerLine, 640)
        XCTAssertGreaterThan(item.alignment, 0)
        XCTAssertTrue(item.flags.contains(.acceptsExternalMemory))
        XCTAssertTrue(report.accepted)
        XCTAssertEqual(report.candidate, "kernel-pool (mmap)")
        XCTAssertEqual(report.selected, "kernel-pool (mmap)")
        XCTAssertTrue(report.rejections.isEmpty)
        XCTAssertEqual(report.format.width, 320)
        XCTAssertFalse(report.consumer.acceptsDeviceMemory)
        XCTAssertTrue(report.consumer.needsCPUAccess)
        XCTAssertEqual(backend.queueState(path: simulatedPath)?.bufferCount ?? 0, 0, "no allocator was initialized")
        let decoded = try FrameDumpJSON.decode(FramingReport.self, from: FrameDumpJSON.encode(report))
        XCTAssertEqual(decoded, report)
        let text = report.render()
        XCTAssertTrue(text.contains("frames         : 3...32"), text)
        XCTAssertTrue(text.contains("bytes per line : 640"), text)
        XCTAssertTrue(text.contains("Allocator for mmap: kernel-pool (mmap): accepted"), text)
    }

    func testFramingMultiplanarHasOneItemPerPlane() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128))
        let report = try FrameDumpCommands.framing(path: simulatedPath, backend: backend, memory: .userPointer,
                                                   format: FormatOptions(pixelFormat: .nv12m, width: 640, height: 480))
        XCTAssertEqual(report.framing.bufferType, .videoCaptureMultiplanar)
        XCTAssertEqual(report.framing.items.count, 2)
        XCTAssertEqual(report.framing.items[0].frameSizeMinimum, 640 * 480 + 128)
        XCTAssertEqual(report.framing.items[1].frameSizeMinimum, 640 * 480 / 2)
        XCTAssertTrue(report.framing.items[0].flags.contains(.dataOffset))
        XCTAssertTrue(report.accepted)
        XCTAssertEqual(report.selected, "user-pointer (userptr)")
        let json = FrameDumpJSON.encode(report)
        XCTAssertTrue(json.contains("\"frameSizeMinimum\" : 307328"), json)
        XCTAssertEqual(try FrameDumpJSON.decode(FramingReport.self, from: json), report)
    }

    func testFramingReportsRejectionReasons() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(memoryKinds: [.mmap]))
        let report = try FrameDumpCommands.framing(path: simulatedPath, backend: backend, memory: .userPointer)
        XCTAssertFalse(report.accepted)
        XCTAssertTrue(report.fellBackToDefault)
        XCTAssertEqual(report.selected, "kernel-pool (mmap)")
        XCTAssertEqual(report.rejections.map(\.allocator), ["user-pointer (userptr)"])
        XCTAssertEqual(report.rejections.first?.reason, "memory kind userptr is not supported by /dev/video0 (it supports mmap)")
        XCTAssertTrue(report.render().contains("rejected user-pointer (userptr): memory kind userptr is not supported"), report.render())

        let tooFew = try FrameDumpCommands.framing(path: simulatedPath, backend: makeBackend(SimulatedDeviceConfiguration(minimumBuffers: 4)),
                                                   buffers: 2)
        // Raised to the minimum, as capture does (issue 16 item 6).
        XCTAssertTrue(tooFew.accepted)
        XCTAssertEqual(tooFew.frameCount, 4)
    }

    func testFramingForDMABufDoesNotTouchTheExporter() throws {
        let backend = makeBackend()
        backend.addDevice(path: "/dev/video1")
        let report = try FrameDumpCommands.framing(path: simulatedPath, backend: backend, memory: .dmabuf,
                                                   source: .device("/dev/video1"))
        XCTAssertTrue(report.accepted)
        XCTAssertEqual(report.selected, "dmabuf (v4l2 /dev/video1)")
        XCTAssertTrue(report.consumer.acceptsDeviceMemory)
        XCTAssertEqual(backend.ioctlCount(path: "/dev/video1", request: requestBuffersRequest), 0, "the exporter was not initialized")
        XCTAssertEqual(backend.openDescriptorCount(path: "/dev/video1"), 0)
        // Without an exporter the framing is still reported, with a note.
        let noExporter = try FrameDumpCommands.framing(path: simulatedPath, backend: backend, memory: .dmabuf)
        XCTAssertTrue(noExporter.accepted)
        XCTAssertNotNil(noExporter.note)
    }

    /// While another handle streams, `framing` answers (G_FMT/TRY_FMT and CREATE_BUFS(0)): no
    /// S_FMT, no REQBUFS.
    func testFramingWorksWhileAnotherHandleStreams() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(frameSizes: .webcam))
        let streaming = try VideoDevice(path: simulatedPath, backend: backend)
        let pin = try CapturePin(device: streaming, configuration: PinConfiguration(pixelFormat: .yuyv, width: 640, height: 360))
        try pin.start()
        defer { pin.stop() }
        let setFormats = backend.ioctlCount(path: simulatedPath, request: setFormatRequest)
        let requests = backend.ioctlCount(path: simulatedPath, request: requestBuffersRequest)

        let report = try FrameDumpCommands.framing(path: simulatedPath, backend: backend)
        XCTAssertEqual(report.framing.items.first?.frameSizeMinimum, 640 * 360 * 2)
        XCTAssertEqual(Set(report.framing.memoryKinds), [.mmap, .userPointer, .dmabuf])
        // A format asked for is tried, not set.
        let tried = try FrameDumpCommands.framing(path: simulatedPath, backend: backend,
                                                  format: FormatOptions(pixelFormat: .nv12, width: 320, height: 180))
        XCTAssertEqual(tried.framing.pixelFormat, .nv12)
        XCTAssertEqual(tried.framing.items.first?.frameSizeMinimum, 320 * 180 * 3 / 2)
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: setFormatRequest), setFormats, "no S_FMT")
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: requestBuffersRequest), requests, "no REQBUFS")
        XCTAssertTrue(try pin.advance(timeout: .milliseconds(1000)), "the other handle still streams")
        XCTAssertEqual(try streaming.format(.videoCapture).pixelFormat, .yuyv, "the format in force is unchanged")
    }

    func testFramingErrorsNameTheOption() {
        // (--buffers 40 is refused by the parser: CommandLineTests.)
        let backend = makeBackend()
        let control = expectFrameDumpError { () throws(FrameDumpError) in
            try FrameDumpCommands.framing(path: simulatedPath, backend: backend,
                                          format: FormatOptions(controls: [ControlSetting(name: "nope", value: 1)]))
        }
        XCTAssertTrue(control?.message.hasPrefix("--set-ctrl: /dev/video0 has no control named nope") ?? false, control?.message ?? "")
    }
}
