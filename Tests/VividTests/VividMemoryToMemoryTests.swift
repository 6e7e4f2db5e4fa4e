import FrameBridgeTestSupport
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The memory-to-memory drivers that `tools/vivid-vm --m2m` loads: vicodec (a stateful FWHT
/// encoder and decoder, and a stateless decoder) and vim2m (a scaler and converter). The nodes
/// are found by their sysfs name, not by number.
///
/// `FRAMEBRIDGE_M2M=1` says the suite was asked to run in a VM booted with --m2m: then a missing
/// node fails the test. Without it the tests skip; tools/test runs them only in that VM.
enum M2M {
    static var requested: Bool { ProcessInfo.processInfo.environment["FRAMEBRIDGE_M2M"] == "1" }

    /// A node the VM should have and has not (the test has failed already).
    struct Missing: Error { var name: String }

    static let encoder = "stateful-encoder"
    static let decoder = "stateful-decoder"
    static let statelessDecoder = "stateless-decoder"
    static let converter = "vim2m"

    /// `/sys/class/video4linux/videoN/name` to `/dev/videoN`.
    static func nodesByName() -> [String: String] {
        let directory = "/sys/class/video4linux"
        var result: [String: String] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where entry.hasPrefix("video") {
            guard let name = try? String(contentsOfFile: "\(directory)/\(entry)/name", encoding: .utf8) else { continue }
            result[name.trimmingCharacters(in: .whitespacesAndNewlines)] = "/dev/\(entry)"
        }
        return result
    }

    /// The node of the driver node named `name`: a failure when the suite was asked to run,
    /// a skip otherwise.
    static func node(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        guard requested else {
            throw XCTSkip("needs vicodec and vim2m: run tools/test (it boots tools/vivid-vm --m2m and sets FRAMEBRIDGE_M2M=1)")
        }
        guard let path = nodesByName()[name] else {
            XCTFail("FRAMEBRIDGE_M2M=1 but no video node is named \(name) (nodes: \(nodesByName()))", file: file, line: line)
            throw Missing(name: name)
        }
        return path
    }

    /// Unloads vicodec and loads it again from the harness's module folder
    /// (`VIVID_VM_M2M_MODULES`) with `multiplanar=0` or `1`; waits for its encoder node.
    static func reloadVicodec(multiplanar: Bool) throws {
        guard let modules = ProcessInfo.processInfo.environment["VIVID_VM_M2M_MODULES"], !modules.isEmpty else {
            XCTFail("VIVID_VM_M2M_MODULES is not set: not in tools/vivid-vm --m2m")
            throw Missing(name: "VIVID_VM_M2M_MODULES")
        }
        let command = "rmmod vicodec && insmod \(modules)/vicodec.ko multiplanar=\(multiplanar ? 1 : 0)"
        let result = try ChildProcess.run("/bin/sh", ["-c", "PATH=/usr/sbin:/sbin:$PATH; " + command])
        guard result.status == 0 else {
            XCTFail("\(command): exit \(result.status): \(result.stderr)")
            throw Missing(name: "vicodec")
        }
        let start = MonotonicClock.nanoseconds()
        while nodesByName()[encoder] == nil || nodesByName()[decoder] == nil {
            guard MonotonicClock.nanoseconds() - start < 10_000_000_000 else {
                XCTFail("no \(encoder) node 10 s after \(command)")
                throw Missing(name: encoder)
            }
            usleep(50_000)
        }
    }

    /// A vivid-like YU12 frame: 75% colour bars (BT.601 limited range), shifted by `number`
    /// pixels so that successive frames differ.
    static func colourBars(width: Int, height: Int, number: Int) -> [UInt8] {
        let bars: [(y: UInt8, u: UInt8, v: UInt8)] = [
            (180, 128, 128), (162, 44, 142), (131, 156, 44), (112, 72, 58),
            (84, 184, 198), (65, 100, 212), (35, 212, 114), (16, 128, 128),
        ]
        var frame = [UInt8](repeating: 0, count: width * height * 3 / 2)
        func bar(_ x: Int, _ scale: Int) -> (y: UInt8, u: UInt8, v: UInt8) {
            bars[(((x * scale + number) % width) * bars.count) / width]
        }
        for row in 0..<height {
            for x in 0..<width { frame[row * width + x] = bar(x, 1).y }
        }
        let chromaWidth = width / 2, chromaHeight = height / 2
        let uBase = width * height, vBase = uBase + chromaWidth * chromaHeight
        for row in 0..<chromaHeight {
            for x in 0..<chromaWidth {
                let value = bar(x, 2)
                frame[uBase + row * chromaWidth + x] = value.u
                frame[vBase + row * chromaWidth + x] = value.v
            }
        }
        return frame
    }
}

/// vicodec and vim2m through the V4L2 layer: roles from the formats on each side, the encoder's
/// controls, and the encoder's drain (ENC_CMD_STOP, the buffer flagged LAST, EPIPE, the EOS
/// event) as Documentation/userspace-api/media/v4l/dev-encoder.rst describes it.
final class VividMemoryToMemoryTests: XCTestCase {
    func testNodesAreFoundByNameAndClassified() throws {
        let expected: [(String, MemoryToMemoryRole, FourCC?)] = [
            (M2M.encoder, .encoder, FourCC("FWHT")), (M2M.decoder, .decoder, FourCC("FWHT")),
            (M2M.statelessDecoder, .decoder, FourCC("SFWH")), (M2M.converter, .converter, nil),
        ]
        for (name, role, compressed) in expected {
            let device = try VideoDevice(path: try M2M.node(name))
            XCTAssertTrue(device.capabilities.isMemoryToMemory, "\(name): \(device.capabilities.deviceCapabilities.names)")
            XCTAssertFalse(device.capabilities.canCapture, name)
            let description = try XCTUnwrap(try device.memoryToMemoryDescription(), name)
            XCTAssertEqual(description.role, role, "\(name): OUTPUT \(description.outputFormats.map(\.pixelFormat)), CAPTURE \(description.captureFormats.map(\.pixelFormat))")
            XCTAssertEqual(description.queues.output, device.capabilities.deviceCapabilities.contains(.videoM2MMultiplanar) ? .videoOutputMultiplanar : .videoOutput)
            switch role {
            case .encoder:
                XCTAssertEqual(description.captureFormats.map(\.pixelFormat), [compressed], name)
                XCTAssertTrue(description.outputFormats.contains { $0.pixelFormat == .yuv420 }, name)
                XCTAssertFalse(description.outputFormats.contains(where: \.isCompressed), name)
            case .decoder:
                XCTAssertEqual(description.outputFormats.map(\.pixelFormat), [compressed], name)
                XCTAssertTrue(description.outputFormats.allSatisfy(\.isCompressed), name)
            case .converter:
                XCTAssertTrue(description.outputFormats.contains { $0.pixelFormat == .rgb24 }, name)
                XCTAssertTrue(description.captureFormats.contains { $0.pixelFormat == .yuyv }, name)
            }
        }
    }

    /// DECODER_CMD and TRY_DECODER_CMD on the stateful decoder; the encoder refuses them, typed.
    func testDecoderCommands() throws {
        let decoder = try VideoDevice(path: try M2M.node(M2M.decoder))
        XCTAssertEqual(try decoder.tryDecoderCommand(.stop).kind, .stop)
        XCTAssertEqual(try decoder.tryDecoderCommand(.start).kind, .start)
        // Not streaming: the driver takes STOP and START and has nothing to drain.
        try decoder.decoderCommand(.stop)
        try decoder.decoderCommand(.start)
        let encoder = try VideoDevice(path: try M2M.node(M2M.encoder))
        do {
            _ = try encoder.tryDecoderCommand(.stop)
            XCTFail("the encoder took VIDIOC_TRY_DECODER_CMD")
        } catch {
            XCTAssertEqual(error.operation, "VIDIOC_TRY_DECODER_CMD")
            XCTAssertEqual(error.errno, .inappropriateIOCTLForDevice, "\(error)")
        }
        XCTAssertEqual(try encoder.tryEncoderCommand(.start).kind, .start)
    }

    /// FWHT's quantization parameters and the generic GOP size, by their named accessors.
    func testEncoderControls() throws {
        let device = try VideoDevice(path: try M2M.node(M2M.encoder))
        let controls = try device.encoderControls()
        let qp = try XCTUnwrap(controls[.fwhtIFrameQP], "no V4L2_CID_FWHT_I_FRAME_QP among \(controls.keys)")
        XCTAssertNotNil(controls[.fwhtPFrameQP])
        XCTAssertNotNil(controls[.gopSize])
        XCTAssertLessThan(qp.minimum, 20)
        XCTAssertGreaterThan(qp.maximum, 20)
        try device.setFWHTQuantization(iFrame: 20, pFrame: 22)
        XCTAssertEqual(try device.encoderControlValue(.fwhtIFrameQP), 20)
        XCTAssertEqual(try device.encoderControlValue(.fwhtPFrameQP), 22)
        try device.setEncoderControl(.gopSize, 5)
        XCTAssertEqual(try device.encoderControlValue(.gopSize), 5)
        // The converter has none of them.
        let converter = try VideoDevice(path: try M2M.node(M2M.converter))
        XCTAssertEqual(try converter.encoderControls(), [:])
    }

    /// Raw YU12 frames into the stateful encoder, ENC_CMD_STOP, then CAPTURE buffers up to the
    /// one flagged LAST, one encoded buffer per frame, then EPIPE, and the EOS event.
    func testEncoderDrainEndsWithLastBufferThenEPIPE() throws {
        let device = try VideoDevice(path: try M2M.node(M2M.encoder))
        XCTAssertEqual(device.memoryToMemoryQueues, .singlePlanar)
        try drainEncoder(device)
    }

    /// The same with vicodec reloaded with multiplanar=1: the OUTPUT_MPLANE and CAPTURE_MPLANE
    /// queues. vicodec is reloaded single-planar afterwards.
    func testMultiplanarEncoderDrain() throws {
        _ = try M2M.node(M2M.encoder)
        try M2M.reloadVicodec(multiplanar: true)
        var failure: (any Error)?
        do { try multiplanarEncoderDrain() } catch { failure = error }
        // The device is closed now (rmmod refuses a module in use).
        try M2M.reloadVicodec(multiplanar: false)
        if let failure { throw failure }
    }

    private func multiplanarEncoderDrain() throws {
        let device = try VideoDevice(path: try M2M.node(M2M.encoder))
        XCTAssertEqual(device.memoryToMemoryQueues, .multiplanar)
        XCTAssertTrue(device.capabilities.deviceCapabilities.contains(.videoM2MMultiplanar))
        let description = try XCTUnwrap(try device.memoryToMemoryDescription())
        XCTAssertEqual(description.role, .encoder)
        XCTAssertEqual(description.captureFormats.map(\.pixelFormat), [FourCC("FWHT")!])
        try drainEncoder(device)
    }

    private func drainEncoder(_ device: VideoDevice) throws {
        let queues = try XCTUnwrap(device.memoryToMemoryQueues)
        let width: UInt32 = 640, height: UInt32 = 360, frameBytes = Int(width * height * 3 / 2), frames = 3

        // The encoder's protocol: the coded format on CAPTURE first, then the raw one on OUTPUT.
        let coded = try device.setFormat(ImageFormat(bufferType: queues.capture, width: width, height: height, pixelFormat: FourCC("FWHT")!))
        XCTAssertEqual(coded.pixelFormat, FourCC("FWHT"))
        let raw = try device.setFormat(ImageFormat(bufferType: queues.output, width: width, height: height, pixelFormat: .yuv420))
        XCTAssertEqual(raw.pixelFormat, .yuv420)
        XCTAssertEqual(raw.width, width)
        XCTAssertGreaterThanOrEqual(raw.totalSize, frameBytes)
        try device.subscribeEndOfStream()

        let outputCount = try device.requestBuffers(count: UInt32(frames), bufferType: queues.output, memory: .mmap).count
        let captureCount = try device.requestBuffers(count: 4, bufferType: queues.capture, memory: .mmap).count
        XCTAssertGreaterThanOrEqual(outputCount, UInt32(frames))
        var outputs: [(BufferDescriptor, UnsafeMutableRawBufferPointer)] = []
        var captures: [UnsafeMutableRawBufferPointer] = []
        defer {
            for (_, mapping) in outputs { device.unmap(mapping) }
            for mapping in captures { device.unmap(mapping) }
            try? device.streamOff(queues.output)
            try? device.streamOff(queues.capture)
            _ = try? device.requestBuffers(count: 0, bufferType: queues.output, memory: .mmap)
            _ = try? device.requestBuffers(count: 0, bufferType: queues.capture, memory: .mmap)
        }
        for index in 0..<outputCount {
            let buffer = try device.queryBuffer(index: index, bufferType: queues.output, memory: .mmap)
            outputs.append((buffer, try device.map(length: Int(buffer.planes[0].length), offset: buffer.planes[0].mapOffset)))
        }
        for index in 0..<captureCount {
            let buffer = try device.queryBuffer(index: index, bufferType: queues.capture, memory: .mmap)
            captures.append(try device.map(length: Int(buffer.planes[0].length), offset: buffer.planes[0].mapOffset))
            try device.queue(buffer)
        }
        try device.streamOn(queues.output)
        try device.streamOn(queues.capture)
        for number in 0..<frames {
            var buffer = outputs[number].0
            let mapping = outputs[number].1
            let frame = M2M.colourBars(width: Int(width), height: Int(height), number: number * 16)
            frame.withUnsafeBytes { mapping.copyMemory(from: $0) }
            buffer.planeCount = 1
            buffer.planes[0].bytesUsed = UInt32(frameBytes)
            try device.queue(buffer)
        }

        XCTAssertEqual(try device.tryEncoderCommand(.stop).kind, .stop)
        try device.encoderCommand(.stop)

        // Drain: CAPTURE buffers until the one flagged LAST (it may be empty).
        var encodedSizes: [UInt32] = []
        var magicOK = true
        var last: BufferDescriptor?
        let deadline = MonotonicClock.nanoseconds() + 60_000_000_000
        while last == nil {
            var buffer = BufferDescriptor(index: 0, bufferType: queues.capture, memory: .mmap,
                                          planeCount: queues.isMultiplanar ? maximumPlaneCount : 1)
            switch try device.dequeueDraining(into: &buffer) {
            case .buffer:
                let used = buffer.planes[0].bytesUsed
                if used > 0 {
                    encodedSizes.append(used)
                    // An FWHT frame starts with its header's two magic words (0x4f4f4f4f, 0xffffffff).
                    let bytes = Array(UnsafeRawBufferPointer(rebasing: captures[Int(buffer.index)][0..<8]))
                    magicOK = magicOK && bytes == [0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff]
                }
                if buffer.flags.contains(.last) {
                    last = buffer
                } else {
                    try device.queue(buffer)
                }
            case .notReady:
                // Give the OUTPUT buffers back as the encoder finishes them.
                var done = BufferDescriptor(index: 0, bufferType: queues.output, memory: .mmap,
                                            planeCount: queues.isMultiplanar ? maximumPlaneCount : 1)
                _ = try device.dequeueDraining(into: &done)
                guard MonotonicClock.nanoseconds() < deadline else {
                    XCTFail("no CAPTURE buffer flagged LAST within 60 s of ENC_CMD_STOP (encoded so far: \(encodedSizes))")
                    return
                }
                _ = try device.poll(events: [.input, .priority, .error], timeoutMilliseconds: 100)
            case .afterLastBuffer:
                XCTFail("EPIPE before any CAPTURE buffer was flagged LAST")
                return
            }
        }
        XCTAssertEqual(encodedSizes.count, frames, "one encoded buffer per raw frame: \(encodedSizes)")
        XCTAssertTrue(encodedSizes.allSatisfy { $0 < UInt32(frameBytes) }, "FWHT compresses colour bars: \(encodedSizes)")
        XCTAssertTrue(magicOK, "an encoded buffer does not start with the FWHT header's magic")

        // After the LAST buffer: EPIPE, typed both ways.
        var after = BufferDescriptor(index: 0, bufferType: queues.capture, memory: .mmap,
                                     planeCount: queues.isMultiplanar ? maximumPlaneCount : 1)
        XCTAssertEqual(try device.dequeueDraining(into: &after), .afterLastBuffer)
        do {
            _ = try device.dequeue(into: &after)
            XCTFail("DQBUF after the LAST buffer did not fail")
        } catch {
            XCTAssertTrue(error.isAfterLastBuffer, "\(error)")
            XCTAssertEqual(error.errno, .brokenPipe)
        }

        // The EOS event was queued with the LAST buffer.
        var event: DeviceEvent?
        while event == nil, MonotonicClock.nanoseconds() < deadline {
            event = try device.dequeueEvent()
            if event == nil { _ = try device.poll(events: [.priority], timeoutMilliseconds: 100) }
        }
        XCTAssertTrue(event?.isEndOfStream == true, "expected V4L2_EVENT_EOS, got \(String(describing: event))")

        // ENC_CMD_START is taken after the drain; a restart of the CAPTURE queue (STREAMOFF,
        // STREAMON) ends the EPIPE state: no buffer is queued, so DQBUF says EAGAIN.
        try device.encoderCommand(.start)
        try device.streamOff(queues.capture)
        try device.streamOn(queues.capture)
        XCTAssertEqual(try device.dequeueDraining(into: &after), .notReady)
    }

    /// `framedump list` and `framedump info` name each memory-to-memory node for what it is,
    /// with its formats on each side.
    func testFramedumpListAndInfoNameTheRoles() throws {
        let encoder = try M2M.node(M2M.encoder)
        let converter = try M2M.node(M2M.converter)
        let list = try ChildProcess.run(VividCLITests.framedump, ["list"])
        XCTAssertEqual(list.status, 0, list.stderr)
        let text = String(decoding: list.stdout, as: UTF8.self)
        let lines = text.split(separator: "\n").map(String.init)
        let encoderLine = try XCTUnwrap(lines.first { $0.hasPrefix(encoder + ":") }, text)
        XCTAssertTrue(encoderLine.contains("memory-to-memory encoder (OUTPUT YU12"), encoderLine)
        XCTAssertTrue(encoderLine.contains("-> CAPTURE FWHT"), encoderLine)
        let decoderLine = try XCTUnwrap(lines.first { $0.hasPrefix(try M2M.node(M2M.decoder) + ":") }, text)
        XCTAssertTrue(decoderLine.contains("memory-to-memory decoder (OUTPUT FWHT ->"), decoderLine)
        let converterLine = try XCTUnwrap(lines.first { $0.hasPrefix(converter + ":") }, text)
        XCTAssertTrue(converterLine.contains("memory-to-memory converter (OUTPUT "), converterLine)
        XCTAssertTrue(converterLine.contains("RGB3"), converterLine)
        XCTAssertTrue(converterLine.contains("-> CAPTURE "), converterLine)

        let json = try ChildProcess.run(VividCLITests.framedump, ["list", "--json"])
        XCTAssertEqual(json.status, 0, json.stderr)
        XCTAssertTrue(String(decoding: json.stdout, as: UTF8.self).contains("\"role\" : \"encoder\""), String(decoding: json.stdout, as: UTF8.self))

        let info = try ChildProcess.run(VividCLITests.framedump, ["info", "-d", encoder])
        XCTAssertEqual(info.status, 0, info.stderr)
        let report = String(decoding: info.stdout, as: UTF8.self)
        XCTAssertTrue(report.contains("Memory-to-memory: encoder"), report)
        XCTAssertTrue(report.contains("OUTPUT (written by the application), video-output"), report)
        XCTAssertTrue(report.contains("'FWHT' ("), report)
        XCTAssertTrue(report.contains("), compressed"), report)
        XCTAssertTrue(report.contains("V4L2_CID_FWHT_I_FRAME_QP"), report)
    }
}
