import FrameBridge
import Foundation
import V4L2
import FrameBridgeTestSupport
import XCTest

/// AVStream allocator semantics against the real vivid driver.
final class VividAllocatorTests: XCTestCase {
    func testFramingAt640x360YUYVShowsSizeimageAndMemoryKinds() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic())
        let framing = pin.framing
        XCTAssertEqual(framing.countItems, 1)
        XCTAssertEqual(framing.bufferType, Vivid.expectedBufferType)
        let item = try XCTUnwrap(framing.items.first)
        XCTAssertEqual(item.frameSizeMinimum, Int(pin.format.planes[0].sizeImage))
        if Vivid.multiplanarMode == 1 {
            XCTAssertEqual(item.frameSizeMinimum, 460_800)
        } else {
            // vivid reserves a data_offset in plane 0 of multi-planar buffers; the payload is still 460800.
            XCTAssertGreaterThanOrEqual(item.frameSizeMinimum, 460_800)
        }
        XCTAssertEqual(item.bytesPerLine, 1280)
        XCTAssertEqual(item.memoryKinds, [.mmap, .userPointer, .dmabuf])
        XCTAssertGreaterThanOrEqual(item.framesMinimum, 1)
        XCTAssertEqual(item.alignment, pageSize)
        let json = String(decoding: try JSONEncoder().encode(framing), as: UTF8.self)
        XCTAssertTrue(json.contains("\"frameSizeMinimum\":\(item.frameSizeMinimum)"), json)
        XCTAssertTrue(json.contains("\"memoryKinds\":[\"mmap\",\"userptr\",\"dmabuf\"]"), json)
        let decoded = try JSONDecoder().decode(AllocatorFraming.self, from: Data(json.utf8))
        XCTAssertEqual(decoded, framing)
        // One captured frame's payload is exactly width*height*2 bytes.
        let captured = try Vivid.capture(device, count: 1)
        XCTAssertEqual(captured.frames[0].count, 460_800)
    }

    private func referenceFrame(_ device: VideoDevice) throws -> [UInt8] {
        let reference = try Vivid.capture(device, count: 2)
        XCTAssertEqual(reference.frames[0], reference.frames[1], "vivid frames differ with osd_text_mode=2; the comparisons below would be meaningless")
        XCTAssertTrue(reference.selection.chosen is KernelPoolAllocator)
        return reference.frames[0]
    }

    private func assertCaptureMatches(_ allocator: any AllocatorDispatch, acceptsDeviceMemory: Bool, reference: [UInt8],
                                      file: StaticString = #filePath, line: UInt = #line) throws {
        let device = try Vivid.open()
        let spy = SpyAllocator(allocator)
        let selection = AllocatorSelection(candidates: [spy], consumer: ConsumerRequirements(needsCPUAccess: true, acceptsDeviceMemory: acceptsDeviceMemory))
        let result = try Vivid.capture(device, count: 3, selection: selection)
        XCTAssertTrue(result.selection.chosen === spy, "chosen: \(result.selection.chosen.name), rejections: \(result.selection.rejections)", file: file, line: line)
        XCTAssertEqual(result.frames.count, 3, file: file, line: line)
        for (i, frame) in result.frames.enumerated() {
            XCTAssertEqual(frame.count, reference.count, "frame \(i) size via \(allocator.name)", file: file, line: line)
            XCTAssertTrue(frame == reference, "frame \(i) via \(allocator.name) differs from the MMAP frame", file: file, line: line)
        }
        XCTAssertEqual(spy.steps.first, "initialize", file: file, line: line)
        XCTAssertEqual(spy.steps.last, "delete", file: file, line: line)
        XCTAssertEqual(spy.steps.filter { $0 == "allocate" }.count, spy.steps.filter { $0 == "free" }.count, file: file, line: line)
    }

    func testUserPointerAllocatorFramesMatchMMAP() throws {
        let device = try Vivid.open()
        let reference = try referenceFrame(device)
        try assertCaptureMatches(UserPointerAllocator(), acceptsDeviceMemory: false, reference: reference)
    }

    func testDMABufFromSecondVividDeviceMatchesMMAP() throws {
        let device = try Vivid.open()
        let reference = try referenceFrame(device)
        let format = try CapturePin(device: device, configuration: Vivid.deterministic()).format
        let exporter = V4L2BufferExporter(path: Vivid.exporter, format: format)
        try assertCaptureMatches(DMABufAllocator(exporter: exporter), acceptsDeviceMemory: true, reference: reference)
    }

    func testDMABufFromVGEMDumbBuffersMatchesMMAP() throws {
        let device = try Vivid.open()
        let reference = try referenceFrame(device)
        let card = try XCTUnwrap(DRMDumbBufferExporter.findCard(), "no /dev/dri/card*: the VM must be booted with --vgem")
        try assertCaptureMatches(DMABufAllocator(exporter: DRMDumbBufferExporter(path: card)), acceptsDeviceMemory: true, reference: reference)
    }

    /// A frame size below sizeimage and a memory kind the device lacks are both rejected with
    /// reasons; neither allocator is initialized; the default is chosen and streams.
    func testSelectionRejectsSmallFramesAndMissingMemoryKindAndFallsBack() throws {
        let device = try Vivid.open(Vivid.contiguous)
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic())
        XCTAssertEqual(pin.framing.memoryKinds, [.mmap, .dmabuf], "vivid with the dma-contig allocator has no USERPTR")
        let lacking = SpyAllocator(UserPointerAllocator())
        let small = SpyAllocator(DMABufAllocator(exporter: V4L2BufferExporter(path: Vivid.exporter), planeSizes: [1000]))
        let selection = AllocatorSelection(candidates: [lacking, small], consumer: ConsumerRequirements(acceptsDeviceMemory: true))
        let result = try pin.start(selection)
        defer { pin.stop() }
        XCTAssertTrue(result.chosen is KernelPoolAllocator, "\(result.chosen.name)")
        XCTAssertTrue(result.fellBackToDefault)
        XCTAssertEqual(result.rejections.count, 2)
        XCTAssertTrue(result.rejections[0].reason.contains("userptr is not supported"), result.rejections[0].reason)
        XCTAssertTrue(result.rejections[1].reason.contains("frame size 1000 bytes is below the minimum \(pin.framing.items[0].frameSizeMinimum)"), result.rejections[1].reason)
        XCTAssertEqual(lacking.steps, [], "a rejected allocator must never be initialized")
        XCTAssertEqual(small.steps, [])
        XCTAssertTrue(gotFrame(try pin.next(timeout: .milliseconds(10_000))))
        XCTAssertEqual(pin.selection?.rejections.count, 2)
    }

    func testDeviceMemoryIsChosenOnlyForConsumersThatAcceptIt() throws {
        let device = try Vivid.open()
        let dmabuf = SpyAllocator(DMABufAllocator(exporter: V4L2BufferExporter(path: Vivid.exporter)))
        let cpuOnly = AllocatorSelection(candidates: [dmabuf], consumer: ConsumerRequirements(needsCPUAccess: true, acceptsDeviceMemory: false))
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic())
        let result = cpuOnly.select(framing: pin.framing)
        XCTAssertTrue(result.chosen is KernelPoolAllocator)
        XCTAssertTrue(result.rejections.first?.reason.contains("device memory") ?? false, "\(result.rejections)")
        XCTAssertEqual(dmabuf.steps, [])
        let accepting = AllocatorSelection(candidates: [dmabuf], consumer: ConsumerRequirements(acceptsDeviceMemory: true))
        XCTAssertTrue(accepting.select(framing: pin.framing).chosen === dmabuf)
    }

    /// K clones held while streaming: the driver keeps running on the other buffers; after
    /// release every buffer is queued again; 1,000 frames lose no buffer.
    func testHeldClonesDoNotStopStreamingAndNoBufferIsLostOver1000Frames() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic(width: 320, height: 180, fps: 60))
        try pin.start(AllocatorSelection(frameCount: 8))
        defer { pin.stop() }
        let total = pin.bufferCounts.queued
        XCTAssertEqual(total, 8)
        var held: [HeldFrame] = []
        for _ in 0..<3 {
            held.append(HeldFrame(try unwrapPointer(try pin.next(timeout: .milliseconds(10_000)))))
        }
        let heldIndexes = Set(held.map(\.index))
        XCTAssertEqual(heldIndexes.count, 3)
        for _ in 0..<50 {
            XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)), "the driver stopped while 3 clones were held")
            XCTAssertGreaterThanOrEqual(pin.bufferCounts.held, 4) // 3 clones + the leading edge
        }
        held.removeAll()
        XCTAssertEqual(pin.bufferCounts.held, 1, "only the leading edge holds a frame after the clones are released")
        XCTAssertEqual(pin.bufferCounts.queued, total - 1)
        var seen = Set<Int>()
        for _ in 0..<947 {
            guard try pin.advance(timeout: .milliseconds(10_000)) else { return XCTFail("stalled") }
            var pointer = try unwrapPointer(pin.cloneLeadingEdge())
            seen.insert(pointer.info.index)
            try pointer.withLockedPayload { XCTAssertEqual($0.plane(0).byteCount, 320 * 180 * 2) }
        }
        let stats = pin.statistics
        XCTAssertEqual(stats.delivered, 1000)
        XCTAssertEqual(stats.driverViolations, 0)
        XCTAssertEqual(stats.requeueFailures, 0)
        XCTAssertEqual(seen.count, total, "every buffer kept circulating")
        XCTAssertEqual(pin.bufferCounts.queued + pin.bufferCounts.held, total)
        XCTAssertEqual(pin.livePointers, 0)
    }

    func testStopCancelsHeldFramesRunsHandlersAndLockFails() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic())
        try pin.start()
        var pointer = try unwrapPointer(try pin.next(timeout: .milliseconds(10_000)))
        let cancelled = expectation(description: "cancel handler ran")
        pointer.onCancel { cancelled.fulfill() }
        pin.stop()
        wait(for: [cancelled], timeout: 1)
        XCTAssertFalse(pointer.isValid)
        XCTAssertThrowsError(try pointer.lock()) { error in
            XCTAssertEqual((error as? CaptureError)?.kind, .frameCancelled)
            XCTAssertTrue("\(error)".contains("STREAMOFF"), "\(error)")
        }
        XCTAssertFalse(pointer.isLocked)
        _ = consume pointer
        XCTAssertNil(pin.allocator, "the allocator is deleted once the last pointer is gone")
        try pin.start()
        XCTAssertTrue(gotFrame(try pin.next(timeout: .milliseconds(10_000))), "the pin restarts after stop")
        pin.stop()
    }

    func testTrailingWindowKeepsFramesBehindTheLeadingEdge() throws {
        let device = try Vivid.open()
        var configuration = Vivid.deterministic(width: 320, height: 180, fps: 60)
        configuration.trailingWindow = 2
        let pin = try CapturePin(device: device, configuration: configuration)
        try pin.start(AllocatorSelection(frameCount: 6))
        defer { pin.stop() }
        for _ in 0..<6 { XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000))) }
        XCTAssertEqual(pin.bufferCounts.held, 3, "leading edge + 2 trailing")
        XCTAssertEqual(pin.bufferCounts.queued, 3)
    }

    func testGrowingThePoolWithCreateBufsWhileStreaming() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic(width: 320, height: 180, fps: 60))
        try pin.start(AllocatorSelection(frameCount: 4))
        defer { pin.stop() }
        XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)))
        try pin.addFrames(2)
        let counts = pin.bufferCounts
        XCTAssertEqual(counts.queued + counts.held + counts.free, 6)
        var seen = Set<Int>()
        for _ in 0..<30 {
            XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)))
            if let pointer = pin.cloneLeadingEdge() { seen.insert(pointer.info.index) }
        }
        XCTAssertTrue(seen.contains(4) || seen.contains(5), "the new buffers were filled: \(seen)")
    }

    func testAsyncSequenceDeliversFramesAndCancellationStopsStreaming() async throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic(width: 320, height: 180, fps: 60))
        try pin.start()
        var sequences: [UInt32] = []
        for try await frame in pin.frames(limit: 5) {
            sequences.append(frame.info.sequence)
            let size = try frame.withLockedPayload { $0.plane(0).byteCount }
            XCTAssertEqual(size, 320 * 180 * 2)
        }
        XCTAssertEqual(sequences.count, 5)
        XCTAssertEqual(sequences, sequences.sorted())
        let task = Task {
            var count = 0
            for try await _ in pin.frames() { count += 1 }
            return count
        }
        try await Task.sleep(for: .milliseconds(500))
        task.cancel()
        let count = try await task.value
        XCTAssertGreaterThan(count, 0)
        XCTAssertFalse(pin.isStreaming, "cancelling the consuming task stops streaming")
    }
}
