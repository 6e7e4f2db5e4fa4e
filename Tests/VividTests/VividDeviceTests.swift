import CV4L2
import FrameBridge
import V4L2
import FrameBridgeTestSupport
import XCTest

/// The typed device layer against the real vivid driver.
final class VividDeviceTests: XCTestCase {
    func testQueryCapabilitiesNamesVivid() throws {
        let device = try Vivid.open()
        XCTAssertEqual(device.capabilities.driver, "vivid")
        XCTAssertTrue(device.capabilities.canCapture)
        XCTAssertTrue(device.capabilities.deviceCapabilities.contains(.streaming))
        XCTAssertEqual(device.capabilities.captureBufferType, Vivid.expectedBufferType)
    }

    func testListsFourInputsAndSelectsEach() throws {
        let device = try Vivid.open()
        let inputs = try device.inputs()
        XCTAssertEqual(inputs.count, 4, "vivid has 4 inputs: \(inputs.map(\.name))")
        XCTAssertEqual(inputs.first?.name, "Webcam 0")
        XCTAssertTrue(inputs.last?.name.hasPrefix("HDMI") ?? false, "\(inputs.map(\.name))")
        for input in inputs {
            try device.selectInput(input.index)
            XCTAssertEqual(try device.currentInput(), input.index)
        }
        try device.selectInput(0)
        XCTAssertThrowsError(try device.selectInput(9)) { error in
            XCTAssertTrue("\(error)".contains("VIDIOC_S_INPUT"), "\(error)")
        }
    }

    func testFormatsSizesAndIntervals() throws {
        let device = try Vivid.open()
        try device.selectInput(0)
        let formats = try device.formats(Vivid.expectedBufferType)
        XCTAssertTrue(formats.contains { $0.pixelFormat == .yuyv }, "\(formats.map(\.pixelFormat))")
        XCTAssertGreaterThan(formats.count, 10)
        let sizes = try device.frameSizes(.yuyv)
        XCTAssertTrue(sizes.contains(.discrete(width: 640, height: 360)), "\(sizes)")
        let intervals = try device.frameIntervals(.yuyv, width: 640, height: 360)
        XCTAssertFalse(intervals.isEmpty)
        XCTAssertTrue(intervals.contains(.discrete(Fraction(1, 30))), "\(intervals)")
        let small = try device.frameIntervals(.yuyv, width: 320, height: 180)
        XCTAssertTrue(small.contains(.discrete(Fraction(1, 60))), "\(small)")
    }

    func testSetAndTryFormat() throws {
        let device = try Vivid.open()
        try device.selectInput(0)
        let type = Vivid.expectedBufferType
        let asked = ImageFormat(bufferType: type, width: 640, height: 360, pixelFormat: .yuyv)
        let tried = try device.tryFormat(asked)
        XCTAssertEqual(tried.width, 640)
        let set = try device.setFormat(asked)
        XCTAssertEqual(set.pixelFormat, .yuyv)
        XCTAssertEqual(set.planes.first?.bytesPerLine, 1280)
        XCTAssertGreaterThanOrEqual(set.planes.first.map { Int($0.sizeImage) } ?? 0, 460_800)
        XCTAssertEqual(try device.format(type).width, 640)
        let interval = try device.setFrameInterval(Fraction(1, 30), type)
        XCTAssertEqual(interval, Fraction(1, 30))
    }

    func testControlsQueryGetSetAndButtons() throws {
        let device = try Vivid.open()
        let controls = try device.controls()
        let osd = try XCTUnwrap(controls.first { $0.commandLineName == "osd_text_mode" })
        XCTAssertEqual(osd.type, .menu)
        XCTAssertEqual(osd.menuItems.map(\.name).count, 3, "\(osd.menuItems)")
        try device.setControlValue(osd.id, 2)
        XCTAssertEqual(try device.controlValue(osd.id), 2)
        try device.setControlValue(osd.id, 0)
        XCTAssertEqual(try device.controlValue(osd.id), 0)
        XCTAssertThrowsError(try device.setControlValue(osd.id, 99)) { error in
            XCTAssertTrue("\(error)".contains("VIDIOC_S_EXT_CTRLS"), "\(error)")
        }
        let button = try XCTUnwrap(controls.first { $0.type == .button && $0.commandLineName == "button" }, "\(controls.map(\.commandLineName))")
        XCTAssertNoThrow(try device.setControlValue(button.id, 1, type: .button))
        for name in ["percentage_of_dropped_buffers", "inject_v4l2_buf_flag_error", "inject_vidioc_reqbufs_error",
                     "inject_vidioc_qbuf_error", "inject_vidioc_streamon_error", "inject_fatal_streaming_error", "disconnect"] {
            XCTAssertNotNil(controls.first { $0.commandLineName == name }, "vivid control \(name) missing")
        }
    }

    /// The typed layer alone: REQBUFS, QUERYBUF, mmap, QBUF, STREAMON, poll, DQBUF for 30 frames.
    func testMMAPStreamOf30FramesWithIncreasingSequence() throws {
        let device = try Vivid.open()
        try device.selectInput(0)
        let type = Vivid.expectedBufferType
        let format = try device.setFormat(ImageFormat(bufferType: type, width: 640, height: 360, pixelFormat: .yuyv))
        let granted = try device.requestBuffers(count: 4, bufferType: type, memory: .mmap)
        XCTAssertGreaterThanOrEqual(granted.count, 2)
        var mappings: [UnsafeMutableRawBufferPointer] = []
        defer {
            for mapping in mappings { device.unmap(mapping) }
            _ = try? device.requestBuffers(count: 0, bufferType: type, memory: .mmap)
        }
        for index in 0..<granted.count {
            let buffer = try device.queryBuffer(index: index, bufferType: type, memory: .mmap)
            XCTAssertEqual(buffer.planeCount, format.planes.count)
            XCTAssertGreaterThanOrEqual(Int(buffer.planes[0].length), Int(format.planes[0].sizeImage))
            mappings.append(try device.map(length: Int(buffer.planes[0].length), offset: buffer.planes[0].mapOffset))
            try device.queue(buffer)
        }
        try device.streamOn(type)
        defer { try? device.streamOff(type) }
        var sequences: [UInt32] = []
        while sequences.count < 30 {
            let events = try device.poll(timeoutMilliseconds: 5000)
            XCTAssertFalse(events.isEmpty, "no frame within 5 s")
            guard let buffer = try device.dequeue(bufferType: type, memory: .mmap) else { continue }
            XCTAssertLessThan(buffer.index, granted.count)
            XCTAssertLessThanOrEqual(buffer.planes[0].bytesUsed, buffer.planes[0].length)
            XCTAssertTrue(buffer.flags.contains(.timestampMonotonic))
            sequences.append(buffer.sequence)
            try device.queue(buffer)
        }
        XCTAssertEqual(sequences.count, 30)
        XCTAssertEqual(sequences, sequences.sorted())
        // vivid derives the sequence from jiffies since STREAMON; when its thread runs late (a
        // loaded VM) it catches up "asap" and two ticks in one jiffy fill two buffers with the
        // same number (vivid-kthread-cap.c, vivid_thread_vid_cap). Repeats of that kind are the
        // driver's; a stream that stands still is not.
        let repeats = sequences.count - Set(sequences).count
        if repeats > 0 { print("vivid: \(repeats) repeated sequence numbers (vivid's thread ran late): \(sequences)") }
        XCTAssertLessThanOrEqual(repeats, 10, "sequence numbers mostly repeat: \(sequences)")
        XCTAssertGreaterThan(sequences.last!, sequences.first!)
    }

    func testLibV4L2BackendOpensAndQueries() throws {
        let kernelDevice = try Vivid.open()
        let kernelPin = try CapturePin(device: kernelDevice, configuration: Vivid.deterministic())
        let kernelSizeimage = Int(kernelPin.format.planes[0].sizeImage)
        let device = try VideoDevice(path: Vivid.main, backend: LibV4L2Backend.shared)
        XCTAssertEqual(device.capabilities.driver, "vivid")
        // libv4l2 presents a multi-planar-only device through the single-planar API.
        XCTAssertEqual(device.capabilities.captureBufferType, .videoCapture)
        XCTAssertFalse(try device.formats(.videoCapture).isEmpty)
        let captured = try Vivid.capture(device, count: 2)
        // Single-planar: exactly the picture. Multi-planar through libv4l2's single-planar
        // emulation: libv4l2 drops vivid's plane-0 data_offset, so the payload is the whole
        // sizeimage (header included), as the kernel path's format says.
        XCTAssertEqual(captured.frames[0].count, Vivid.multiplanarMode == 1 ? 460_800 : kernelSizeimage)
    }

    func testOpeningNonDevicesGivesClearErrors() throws {
        _ = try Vivid.open()
        XCTAssertThrowsError(try VideoDevice(path: "/dev/null")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("/dev/null") && text.contains("VIDIOC_QUERYCAP"), text)
        }
        XCTAssertThrowsError(try VideoDevice(path: "/dev/video99")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("/dev/video99") && text.contains("ENOENT"), text)
        }
    }
}
