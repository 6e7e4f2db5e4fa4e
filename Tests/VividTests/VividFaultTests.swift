import FrameBridge
import Synchronization
import V4L2
import FrameBridgeTestSupport
import XCTest

/// vivid's fault injection, bad input and resource checks against the real driver.
/// Each test prints one `fault case:` line so tools/test's output lists the cases.
final class VividFaultTests: XCTestCase {
    private func report(_ name: String, _ statistics: CaptureStatistics, _ extra: String = "") {
        print("fault case: \(name): delivered \(statistics.delivered), dropped \(statistics.dropped), flagged \(statistics.errorFlagged), skipped \(statistics.skippedErrorFrames), violations \(statistics.driverViolations), requeue failures \(statistics.requeueFailures) \(extra)")
    }

    /// percentage_of_dropped_buffers: every frame is delivered or counted dropped.
    func testDroppedBuffersAreCountedExactlyFromSequenceGaps() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic(
            width: 320, height: 180, fps: 60, extraControls: [(name: "percentage_of_dropped_buffers", value: 50)]))
        defer { try? Vivid.setControl(device, "percentage_of_dropped_buffers", 0) }
        try pin.start()
        defer { pin.stop() }
        var sequences: [UInt32] = []
        var droppedBefore = 0
        for _ in 0..<40 {
            let pointer = try unwrapPointer(try pin.next(timeout: .milliseconds(10_000)))
            sequences.append(pointer.info.sequence)
            droppedBefore += Int(pointer.info.droppedBefore)
        }
        let stats = pin.statistics
        let span = Int(sequences.last! - sequences.first!) + 1
        XCTAssertGreaterThan(stats.dropped, 5, "with 50% drops some frames must be missing")
        XCTAssertEqual(stats.delivered + stats.dropped - Int(sequences.first! - stats.firstSequence!), span)
        XCTAssertEqual(stats.delivered, 40)
        XCTAssertEqual(droppedBefore, stats.dropped)
        report("percentage_of_dropped_buffers=50", stats, "span \(span)")
    }

    private func runFlagErrorCase(policy: ErrorFramePolicy) throws -> (CaptureStatistics, Int) {
        let device = try Vivid.open()
        var configuration = Vivid.deterministic(width: 320, height: 180, fps: 60)
        configuration.errorFramePolicy = policy
        let pin = try CapturePin(device: device, configuration: configuration)
        try pin.start()
        defer { pin.stop() }
        XCTAssertTrue(gotFrame(try pin.next(timeout: .milliseconds(10_000))))
        try Vivid.setControl(device, "inject_v4l2_buf_flag_error")
        var flaggedDelivered = 0
        for _ in 0..<12 {
            let pointer = try unwrapPointer(try pin.next(timeout: .milliseconds(10_000)))
            if pointer.info.hasError { flaggedDelivered += 1 }
        }
        return (pin.statistics, flaggedDelivered)
    }

    func testBufferErrorFlagIsDeliveredAndCounted() throws {
        let (stats, flaggedDelivered) = try runFlagErrorCase(policy: .deliver)
        XCTAssertEqual(stats.errorFlagged, 1)
        XCTAssertEqual(flaggedDelivered, 1)
        XCTAssertEqual(stats.skippedErrorFrames, 0)
        report("inject_v4l2_buf_flag_error (deliver)", stats)
    }

    func testBufferErrorFlagIsSkippedAndCounted() throws {
        let (stats, flaggedDelivered) = try runFlagErrorCase(policy: .skip)
        XCTAssertEqual(stats.errorFlagged, 1)
        XCTAssertEqual(flaggedDelivered, 0)
        XCTAssertEqual(stats.skippedErrorFrames, 1)
        report("inject_v4l2_buf_flag_error (skip)", stats)
    }

    /// inject_vidioc_reqbufs_error / _qbuf_error / _streamon_error: start fails naming the ioctl,
    /// nothing stays allocated, and a retry streams.
    private func assertStartFailsThenRetrySucceeds(control: String, ioctl: String) throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic())
        let spy = SpyAllocator(KernelPoolAllocator())
        let fdsBefore = ProcessResources.openDescriptors()
        let mapsBefore = ProcessResources.mappings()
        try Vivid.setControl(device, control)
        XCTAssertThrowsError(try pin.start(AllocatorSelection(candidates: [spy]))) { error in
            XCTAssertTrue("\(error)".contains(ioctl), "\(control): \(error)")
            XCTAssertTrue("\(error)".contains(Vivid.main), "\(error)")
            print("fault case: \(control): start() failed: \(error)")
        }
        XCTAssertEqual(spy.steps.last, "delete", "the allocator was torn down after the failed start")
        XCTAssertFalse(pin.isStreaming)
        XCTAssertEqual(ProcessResources.deviceMappings(), 0, "no device mapping left after the failed start")
        XCTAssertLessThanOrEqual(ProcessResources.mappings(), mapsBefore)
        XCTAssertEqual(ProcessResources.openDescriptors(), fdsBefore)
        try pin.start()
        defer { pin.stop() }
        XCTAssertTrue(gotFrame(try pin.next(timeout: .milliseconds(10_000))), "retry after \(control) streams")
    }

    func testInjectedReqbufsErrorFailsStartAndRetrySucceeds() throws {
        try assertStartFailsThenRetrySucceeds(control: "inject_vidioc_reqbufs_error", ioctl: "VIDIOC_REQBUFS")
    }

    func testInjectedQbufErrorFailsStartAndRetrySucceeds() throws {
        try assertStartFailsThenRetrySucceeds(control: "inject_vidioc_qbuf_error", ioctl: "VIDIOC_QBUF")
    }

    func testInjectedStreamonErrorFailsStartAndRetrySucceeds() throws {
        try assertStartFailsThenRetrySucceeds(control: "inject_vidioc_streamon_error", ioctl: "VIDIOC_STREAMON")
    }

    /// A QBUF failure mid-stream: counted, the buffer is queued again later, streaming goes on.
    func testInjectedQbufErrorMidStreamIsRetried() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic(width: 320, height: 180, fps: 60))
        try pin.start(AllocatorSelection(frameCount: 4))
        defer { pin.stop() }
        XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)))
        try Vivid.setControl(device, "inject_vidioc_qbuf_error")
        for _ in 0..<12 { XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000))) }
        let stats = pin.statistics
        XCTAssertEqual(stats.requeueFailures, 1)
        XCTAssertEqual(pin.bufferCounts.queued + pin.bufferCounts.held, 4, "the buffer whose QBUF failed was queued again")
        report("inject_vidioc_qbuf_error mid-stream", stats)
    }

    /// inject_fatal_streaming_error: a clear error, held frames cancelled, no hang, restart works.
    func testFatalStreamingErrorCancelsHeldFramesAndRestartWorks() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic(width: 320, height: 180, fps: 60))
        try pin.start()
        var held = try unwrapPointer(try pin.next(timeout: .milliseconds(10_000)))
        let cancelled = Counter()
        held.onCancel { cancelled.increment() }
        try Vivid.setControl(device, "inject_fatal_streaming_error")
        var thrown: CaptureError?
        for _ in 0..<20 {
            do {
                _ = try pin.advance(timeout: .milliseconds(10_000))
            } catch {
                thrown = error
                break
            }
        }
        let error = try XCTUnwrap(thrown, "advance must fail after the fatal error")
        XCTAssertEqual(error.kind, .fatalStreamingError)
        XCTAssertTrue(error.message.contains("fatal driver error"), error.message)
        XCTAssertEqual(cancelled.value, 1)
        XCTAssertThrowsError(try held.lock())
        XCTAssertThrowsError(try pin.advance(timeout: .milliseconds(100)), "a failed pin keeps failing until restarted")
        print("fault case: inject_fatal_streaming_error: \(error); held frame cancelled, handler ran")
        _ = consume held
        try pin.start()
        defer { pin.stop() }
        XCTAssertTrue(gotFrame(try pin.next(timeout: .milliseconds(10_000))), "restart after the fatal error")
    }

    /// disconnect: ENODEV is a clear error, not a crash. Uses its own vivid instance.
    func testDisconnectMidStreamIsAClearError() throws {
        let device = try Vivid.open(Vivid.disposable)
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic(width: 320, height: 180, fps: 60))
        try pin.start()
        var frames = 0
        for _ in 0..<3 where gotFrame(try pin.next(timeout: .milliseconds(10_000))) { frames += 1 }
        XCTAssertEqual(frames, 3)
        try Vivid.setControl(device, "disconnect")
        var thrown: CaptureError?
        for _ in 0..<30 {
            do {
                guard try pin.advance(timeout: .milliseconds(2000)) else { continue }
                frames += 1
            } catch {
                thrown = error
                break
            }
        }
        let error = try XCTUnwrap(thrown)
        XCTAssertEqual(error.kind, .disconnected, "\(error)")
        XCTAssertTrue(error.message.contains(Vivid.disposable), error.message)
        print("fault case: disconnect: \(error) after \(frames) frames")
        pin.stop()
    }

    /// A slow consumer holding every buffer: block waits and counts; cancel-oldest keeps the driver fed.
    func testStarvationPoliciesNeverDeadlock() throws {
        let device = try Vivid.open()
        for policy in StarvationPolicy.allCases {
            var configuration = Vivid.deterministic(width: 320, height: 180, fps: 60)
            configuration.starvationPolicy = policy
            let pin = try CapturePin(device: device, configuration: configuration)
            try pin.start(AllocatorSelection(frameCount: 3))
            var held: [HeldFrame] = []
            let cancels = Counter()
            for _ in 0..<3 {
                var pointer = try unwrapPointer(try pin.next(timeout: .milliseconds(10_000)))
                pointer.onCancel { cancels.increment() }
                held.append(HeldFrame(pointer))
            }
            switch policy {
            case .block:
                XCTAssertFalse(try pin.advance(timeout: .milliseconds(300)), "every buffer is held: nothing can arrive")
                XCTAssertEqual(pin.statistics.starvationWaits, 1)
                held.removeFirst()
                XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)), "a released frame feeds the driver again")
            case .cancelOldestUnlocked:
                XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)))
                XCTAssertEqual(pin.statistics.starvationCancels, 1)
                XCTAssertEqual(cancels.value, 1)
                XCTAssertThrowsError(try held[0].pointer!.lock(), "the oldest held frame was cancelled")
            }
            report("slow consumer (\(policy.rawValue))", pin.statistics, "waits \(pin.statistics.starvationWaits), cancels \(pin.statistics.starvationCancels)")
            held.removeAll()
            pin.stop()
        }
    }

    func testBadConfigurationGivesClearErrors() throws {
        let device = try Vivid.open()
        XCTAssertThrowsError(try CapturePin(device: device, configuration: PinConfiguration(pixelFormat: FourCC("ZZZZ")!))) { error in
            XCTAssertTrue("\(error)".contains("ZZZZ") && "\(error)".contains(Vivid.main), "\(error)")
        }
        XCTAssertThrowsError(try CapturePin(device: device, configuration: Vivid.deterministic(width: 641, height: 333))) { error in
            XCTAssertTrue("\(error)".contains("641x333"), "\(error)")
        }
        XCTAssertThrowsError(try CapturePin(device: device, configuration: PinConfiguration(input: 7))) { error in
            XCTAssertTrue("\(error)".contains("VIDIOC_S_INPUT"), "\(error)")
        }
        XCTAssertThrowsError(try CapturePin(device: device, configuration: PinConfiguration(controls: [(name: "no_such_control", value: 1)]))) { error in
            XCTAssertTrue("\(error)".contains("no_such_control"), "\(error)")
        }
        XCTAssertThrowsError(try CapturePin(device: device, configuration: PinConfiguration(controls: [(name: "osd_text_mode", value: 9)]))) { error in
            XCTAssertTrue("\(error)".contains("out of range"), "\(error)")
        }
        print("fault case: bad configuration (pixel format, size, input, control name, control range): clear errors")
    }

    func testBusyDeviceGivesEBUSY() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic())
        try pin.start()
        defer { pin.stop() }
        let other = try VideoDevice(path: Vivid.main)
        XCTAssertThrowsError(try CapturePin(device: other, configuration: Vivid.deterministic(width: 320, height: 180))) { error in
            XCTAssertTrue("\(error)".contains("EBUSY") && "\(error)".contains("VIDIOC_S_FMT"), "\(error)")
            print("fault case: device busy: \(error)")
        }
    }

    /// After streaming stops, no mapping, fd or buffer is left, for every allocator.
    func testNoResourceLeaksForEveryAllocator() throws {
        let device = try Vivid.open()
        let card = try XCTUnwrap(DRMDumbBufferExporter.findCard(), "the VM must be booted with --vgem")
        let format = try CapturePin(device: device, configuration: Vivid.deterministic()).format
        let makers: [(String, () -> any AllocatorDispatch)] = [
            ("mmap", { KernelPoolAllocator() }),
            ("userptr", { UserPointerAllocator() }),
            ("dmabuf video1", { DMABufAllocator(exporter: V4L2BufferExporter(path: Vivid.exporter, format: format)) }),
            ("dmabuf vgem", { DMABufAllocator(exporter: DRMDumbBufferExporter(path: card)) }),
        ]
        for (name, make) in makers {
            func cycle() throws {
                let pin = try CapturePin(device: device, configuration: Vivid.deterministic())
                let result = try pin.start(AllocatorSelection(candidates: [make()], consumer: ConsumerRequirements(acceptsDeviceMemory: true)))
                XCTAssertFalse(result.fellBackToDefault, "\(name): \(result.rejections)")
                for _ in 0..<2 {
                    var pointer = try unwrapPointer(try pin.next(timeout: .milliseconds(10_000)))
                    try pointer.withLockedPayload { XCTAssertEqual($0.info.payloadSize, 460_800) }
                }
                pin.stop()
            }
            try cycle() // warm-up: first-use allocations of the runtime
            let fds = ProcessResources.openDescriptors()
            let maps = ProcessResources.mappings()
            let deviceMaps = ProcessResources.deviceMappings()
            for _ in 0..<20 { try cycle() }
            XCTAssertEqual(ProcessResources.openDescriptors(), fds, "\(name): file descriptors leaked")
            XCTAssertEqual(ProcessResources.deviceMappings(), deviceMaps, "\(name): device or dmabuf mappings leaked")
            XCTAssertLessThanOrEqual(ProcessResources.mappings(), maps, "\(name): mappings grew (malloc may trim, never grow)")
            print("fault case: resources (\(name), 20 start/stop cycles): fds \(fds) -> \(ProcessResources.openDescriptors()), device mappings \(deviceMaps) -> \(ProcessResources.deviceMappings()), all mappings \(maps) -> \(ProcessResources.mappings())")
        }
    }

    func testTwoHundredStartStopCyclesDoNotGrow() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic(width: 320, height: 180, fps: 60))
        try pin.start()
        pin.stop()
        let fds = ProcessResources.openDescriptors()
        let maps = ProcessResources.mappings()
        for cycle in 0..<200 {
            try pin.start()
            if cycle % 50 == 0 { XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000))) }
            pin.stop()
        }
        XCTAssertEqual(ProcessResources.openDescriptors(), fds)
        XCTAssertLessThanOrEqual(ProcessResources.mappings(), maps)
        XCTAssertEqual(ProcessResources.deviceMappings(), 0, "no /dev/video mapping after stop")
        print("fault case: resources (mmap, 200 start/stop cycles): fds \(fds) -> \(ProcessResources.openDescriptors()), mappings \(maps) -> \(ProcessResources.mappings())")
    }

    /// Frames released from other threads and tasks while the consumer keeps streaming.
    func testFramesReleasedFromOtherThreadsWhileStreaming() async throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic(width: 320, height: 180, fps: 60))
        try pin.start(AllocatorSelection(frameCount: 8))
        defer { pin.stop() }
        let released = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<60 {
                let frame = CapturedFrame.holding(try unwrapPointer(try pin.next(timeout: .milliseconds(10_000))))
                group.addTask {
                    try await Task.sleep(for: .milliseconds(Int.random(in: 1...30)))
                    frame.release()
                    released.increment()
                }
            }
            try await group.waitForAll()
        }
        XCTAssertEqual(released.value, 60)
        XCTAssertEqual(pin.livePointers, 0)
        XCTAssertEqual(pin.bufferCounts.queued + pin.bufferCounts.held, 8)
        XCTAssertEqual(pin.statistics.driverViolations, 0)
        print("fault case: frames released from 60 tasks: all 8 buffers circulating, \(pin.statistics.delivered) delivered")
    }
}
