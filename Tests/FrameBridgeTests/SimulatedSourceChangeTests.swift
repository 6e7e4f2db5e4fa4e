import CV4L2
import Dispatch
import FrameBridge
import FrameBridgeTestSupport
import Foundation
import SystemPackage
import V4L2
import V4L2Simulator
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The source-change path of the pin (subscribe, DQEVENT, QUERY/S_DV_TIMINGS, S_FMT, new
/// allocator selection, restart) on the simulator's live HDMI input: the host (and
/// ThreadSanitizer) version of VividSourceChangeTests. The simulator's source is changed by the
/// test hooks while the pin streams; frames are produced by the test (manual production), so
/// what the pin sees between them is exact.
final class SimulatedSourceChangeTests: XCTestCase {
    private static let path = "/dev/video20"
    private static let webcamPath = "/dev/video21"
    private static let hdmi = UInt32(3)

    // MARK: - The simulator's HDMI input

    /// The ioctls themselves, below the pin: input status, timings, EBUSY, events and POLLPRI.
    func testTheHDMIInputAnswersTimingsAndEvents() throws {
        let backend = makeBackend(width: 1280, height: 720)
        let device = try VideoDevice(path: Self.path, backend: backend)
        let other = try VideoDevice(path: Self.path, backend: backend)
        XCTAssertEqual(try device.inputs()[3].capabilityFlags, .dvTimings)
        XCTAssertEqual(try device.inputs()[3].statusFlags, [])
        // Off the HDMI input there are no timings (vivid: ENODATA).
        XCTAssertEqual(catchV4L2 { () throws(V4L2Error) in _ = try device.queryDVTimings() }?.errno, Errno(rawValue: ENODATA))
        try device.selectInput(Self.hdmi)
        let format = try device.format(.videoCapture)
        XCTAssertEqual([format.width, format.height], [1280, 720], "the input's size is its timings'")
        let timings = try device.queryDVTimings()
        XCTAssertEqual([timings.width, timings.height], [1280, 720])
        XCTAssertEqual(timings.pixelClock, 74_250_000)
        XCTAssertEqual(timings.description, "1280x720p60")
        XCTAssertFalse(timings.interlaced)
        XCTAssertEqual(timings.polarities, UInt32(V4L2_DV_HSYNC_POS_POL | V4L2_DV_VSYNC_POS_POL))
        XCTAssertEqual(try device.dvTimings(), timings)

        // Events: none yet (ENOENT), one per change per subscribed handle, merged while pending.
        try device.subscribe(.sourceChange, id: Self.hdmi)
        XCTAssertNil(try device.dequeueEvent())
        XCTAssertEqual(try device.poll(events: [.priority], timeoutMilliseconds: 0), [])
        XCTAssertTrue(backend.changeSource(path: Self.path, width: 640, height: 480))
        XCTAssertTrue(backend.changeSource(path: Self.path, width: 640, height: 480))
        XCTAssertEqual(try device.poll(events: [.priority], timeoutMilliseconds: 0), [.priority])
        XCTAssertEqual(try other.poll(events: [.priority], timeoutMilliseconds: 0), [], "the other handle did not subscribe")
        let event = try XCTUnwrap(try device.dequeueEvent())
        XCTAssertEqual(event.kind, .sourceChange)
        XCTAssertEqual(event.id, Self.hdmi)
        XCTAssertEqual(event.sourceChanges, .resolution)
        XCTAssertEqual(event.sequence, 1, "the second event replaced the first")
        XCTAssertEqual(event.pending, 0)
        XCTAssertNil(try device.dequeueEvent())

        // The receiver keeps its timings until S_DV_TIMINGS, which is EBUSY while buffers exist.
        XCTAssertEqual(try device.dvTimings().width, 1280)
        let detected = try device.queryDVTimings()
        XCTAssertEqual([detected.width, detected.height, UInt32(detected.pixelClock)], [640, 480, 25_175_000])
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(catchV4L2 { () throws(V4L2Error) in _ = try device.setDVTimings(detected) }?.errno, .resourceBusy)
        XCTAssertEqual(try device.setDVTimings(try device.dvTimings()).width, 1280, "the same timings are fine while busy")
        try device.requestBuffers(count: 0, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(try device.setDVTimings(detected), detected)
        let changed = try device.format(.videoCapture)
        XCTAssertEqual([changed.width, changed.height], [640, 480])

        // No signal: ENOLINK and the status bit; a poll waiting on another thread sees the event.
        let woke = Locked<PollEvents?>(nil)
        let returned = DispatchSemaphore(value: 0)
        Thread {
            woke.withLock { $0 = try? device.poll(events: [.priority], timeoutMilliseconds: 10_000) }
            returned.signal()
        }.start()
        usleep(50_000)
        XCTAssertTrue(backend.setSignal(path: Self.path, present: false))
        XCTAssertEqual(returned.wait(timeout: .now() + 10), .success, "the event did not end the other thread's poll")
        XCTAssertEqual(woke.withLock { $0 }, [.priority])
        XCTAssertEqual(catchV4L2 { () throws(V4L2Error) in _ = try device.queryDVTimings() }?.errno, Errno(rawValue: ENOLINK))
        XCTAssertEqual(try device.inputs()[3].statusFlags, .noSignal)
        XCTAssertEqual(try XCTUnwrap(try device.dequeueEvent()).sequence, 2)
        try device.unsubscribe(.sourceChange, id: Self.hdmi)
        XCTAssertTrue(backend.setSignal(path: Self.path, present: true))
        XCTAssertNil(try device.dequeueEvent(), "unsubscribed")
        XCTAssertEqual(backend.pendingEventCount(path: Self.path), 0)

        // Without an HDMI source the ioctls stay what they were: ENOTTY.
        let plain = SimulatedV4L2Backend(path: Self.webcamPath)
        let webcam = try VideoDevice(path: Self.webcamPath, backend: plain)
        try webcam.selectInput(Self.hdmi)
        XCTAssertEqual(catchV4L2 { () throws(V4L2Error) in try webcam.subscribe(.sourceChange, id: Self.hdmi) }?.errno, .inappropriateIOCTLForDevice)
        XCTAssertFalse(plain.changeSource(path: Self.webcamPath, width: 640, height: 480))
    }

    // MARK: - The pin follows the source

    /// 1280x720 -> 640x480 while streaming: the change comes before any frame of the new size,
    /// the frames filled before it are dropped, not delivered, and frames keep coming.
    func testFollowsATimingsChangeWhileStreaming() throws {
        let backend = makeBackend(width: 1280, height: 720)
        let pin = try makePin(backend)
        defer { pin.stop() }
        XCTAssertEqual([pin.format.width, pin.format.height], [1280, 720])
        let started = try pin.start()
        let oldSize = Int(pin.format.planes[0].sizeImage)
        XCTAssertEqual(oldSize, 1280 * 720 * 2)
        XCTAssertEqual(backend.subscriptionCount(path: Self.path), 1)
        for _ in 0..<3 {
            let frame = try nextFrame(pin, produce: backend)
            XCTAssertEqual(frame.planes[0].bytesUsed, oldSize)
            XCTAssertEqual(frame.formatGeneration, 0)
        }

        // Two frames of the old size are filled when the source changes: the pin must drop them.
        XCTAssertEqual(backend.produceFrames(path: Self.path, count: 2), 2)
        XCTAssertTrue(backend.changeSource(path: Self.path, width: 640, height: 480))
        let followed = try expectFormatChange(pin)
        XCTAssertEqual([followed.previous.width, followed.previous.height], [1280, 720])
        XCTAssertEqual([followed.format.width, followed.format.height], [640, 480])
        XCTAssertEqual(followed.format.pixelFormat, .yuyv)
        XCTAssertEqual(followed.input, Self.hdmi)
        XCTAssertEqual(followed.changes, .resolution)
        XCTAssertEqual(followed.timings.map { [$0.width, $0.height] }, [640, 480])
        XCTAssertEqual(followed.timings?.pixelClock, 25_175_000)
        XCTAssertEqual(followed.generation, 1)
        XCTAssertEqual(followed.framesDropped, 2)
        XCTAssertFalse(followed.afterNoSignal)
        XCTAssertEqual(followed.selection.chosen.name, started.chosen.name)
        XCTAssertEqual(pin.formatGeneration, 1)
        XCTAssertEqual(pin.format, followed.format)
        XCTAssertTrue(pin.isStreaming)
        XCTAssertFalse(pin.isFollowingSourceChange)
        let newSize = Int(followed.format.planes[0].sizeImage)
        XCTAssertEqual(newSize, 640 * 480 * 2)
        XCTAssertEqual(followed.framing.items.first?.bufferSize, newSize)
        XCTAssertEqual(backend.queueState(path: Self.path)?.format.width, 640, "S_DV_TIMINGS and S_FMT reached the driver")
        XCTAssertEqual(backend.ioctlCount(path: Self.path, request: CV4L2_VIDIOC_S_DV_TIMINGS), 1)

        for i in 0..<10 {
            let frame = try nextFrame(pin, produce: backend)
            XCTAssertEqual(frame.planes[0].bytesUsed, newSize, "frame \(i) after the change")
            XCTAssertEqual(frame.formatGeneration, 1)
            XCTAssertEqual(frame.sequence, UInt32(i), "the new stream numbers its frames from 0")
        }
        let statistics = pin.statistics
        XCTAssertEqual(statistics.sourceChanges, 1)
        XCTAssertEqual(statistics.droppedAtSourceChange, 2)
        XCTAssertEqual(statistics.dropped, 0, "no gap in the sequence numbers of either stream")
        XCTAssertEqual(statistics.delivered, 13)
        XCTAssertEqual(backend.pendingEventCount(path: Self.path), 0)
    }

    /// A frame held on another thread when the source changes: it is cancelled at STREAMOFF,
    /// the restart waits until that thread lets go of it, then goes on in the new size.
    func testTheRestartWaitsForAFrameHeldOnAnotherThread() throws {
        let backend = makeBackend(width: 1280, height: 720)
        let pin = try makePin(backend)
        defer { pin.stop() }
        try pin.start()
        XCTAssertEqual(backend.produceFrames(path: Self.path, count: 1), 1)
        let held = try unwrapPointer(try pin.next(timeout: .seconds(5), keepLeadingEdge: false))
        XCTAssertEqual(held.info.planes[0].payloadSize, 1280 * 720 * 2)
        let box = Locked<StreamPointerBox?>(StreamPointerBox(held))
        let release = DispatchSemaphore(value: 0)
        let released = DispatchSemaphore(value: 0)
        let seenByHolder = Locked<(valid: Bool, lockError: CaptureError.Kind?)?>(nil)
        Thread {
            // The holder: takes the frame over, waits for the change, finds it cancelled, lets go.
            let holder = box.withLock { box in defer { box = nil }; return box }
            guard release.wait(timeout: .now() + 20) == .success else { return }
            usleep(50_000) // the consumer is back in its wait by now
            var pointer = holder?.pointer.take()
            var kind: CaptureError.Kind?
            do throws(CaptureError) { try pointer?.lock() } catch { kind = error.kind }
            seenByHolder.withLock { $0 = (pointer?.isValid ?? true, kind) }
            pointer = nil
            released.signal()
        }.start()

        XCTAssertTrue(backend.changeSource(path: Self.path, width: 640, height: 480))
        // While the frame is held the buffers cannot be freed: the waits end empty at their timeout.
        for _ in 0..<2 {
            if let event = try pin.nextEvent(timeout: .milliseconds(200)) { return XCTFail("while a frame is held: \(describe(event))") }
        }
        XCTAssertTrue(pin.isFollowingSourceChange)
        XCTAssertFalse(pin.isStreaming)
        XCTAssertEqual(pin.livePointers, 1)
        release.signal()
        let followed = try expectFormatChange(pin, timeout: .seconds(10))
        XCTAssertEqual(released.wait(timeout: .now() + 10), .success, "the holder thread did not finish")
        let seen = try XCTUnwrap(seenByHolder.withLock { $0 })
        XCTAssertFalse(seen.valid, "the held frame was cancelled at STREAMOFF")
        XCTAssertEqual(seen.lockError, .frameCancelled)
        XCTAssertEqual(pin.livePointers, 0)
        XCTAssertEqual([followed.format.width, followed.format.height], [640, 480])
        XCTAssertEqual(followed.generation, 1)
        XCTAssertEqual(followed.framesDropped, 0)
        XCTAssertEqual(pin.statistics.cancelledFrames, 1)
        XCTAssertEqual(try nextFrame(pin, produce: backend).planes[0].payloadSize, 640 * 480 * 2)
    }

    /// The signal goes: .noSignal once, empty waits; it comes back: .formatChanged(afterNoSignal), frames.
    func testNoSignalThenTheSignalComingBackRestarts() throws {
        let backend = makeBackend(width: 1280, height: 720)
        let pin = try makePin(backend)
        defer { pin.stop() }
        try pin.start()
        let size = Int(pin.format.planes[0].sizeImage)
        for _ in 0..<2 { XCTAssertEqual(try nextFrame(pin, produce: backend).planes[0].bytesUsed, size) }

        XCTAssertTrue(backend.setSignal(path: Self.path, present: false))
        guard let event = try pin.nextEvent(timeout: .seconds(5)) else { return XCTFail("no event within 5 s of the signal going") }
        guard case .noSignal(let loss) = consume event else { return XCTFail("expected no signal") }
        XCTAssertEqual(loss.input, Self.hdmi)
        XCTAssertTrue(loss.detail.contains("VIDIOC_QUERY_DV_TIMINGS") && loss.detail.contains("ENOLINK"), loss.detail)
        XCTAssertEqual(loss.status, .noSignal)
        XCTAssertFalse(pin.isStreaming)
        XCTAssertTrue(pin.isFollowingSourceChange)
        XCTAssertNotNil(pin.signalLoss)
        for _ in 0..<2 {
            if let event = try pin.nextEvent(timeout: .milliseconds(100)) { return XCTFail("without a signal: \(describe(event))") }
        }

        XCTAssertTrue(backend.setSignal(path: Self.path, present: true))
        let back = try expectFormatChange(pin)
        XCTAssertTrue(back.afterNoSignal)
        XCTAssertEqual([back.format.width, back.format.height], [1280, 720])
        XCTAssertEqual(back.generation, 1)
        XCTAssertTrue(pin.isStreaming)
        XCTAssertNil(pin.signalLoss)
        for _ in 0..<3 { XCTAssertEqual(try nextFrame(pin, produce: backend).planes[0].bytesUsed, size) }
        XCTAssertEqual(pin.statistics.sourceChanges, 1)
        XCTAssertEqual(pin.formatGeneration, 1)
    }

    /// Two pins in a group, one on the HDMI input: its change comes as .formatChanged(pin: 0),
    /// the webcam pin goes on, and neither hands out a frame of another size than its format.
    func testAGroupReportsOnePinsChange() throws {
        let backend = makeBackend(width: 1280, height: 720, production: .onDemand)
        backend.addDevice(path: Self.webcamPath, configuration: SimulatedDeviceConfiguration(
            frameSizes: .discrete([SimulatedFrameSize(width: 320, height: 180)]), initialWidth: 320, initialHeight: 180))
        let live = try makePin(backend)
        let steady = try CapturePin(device: try VideoDevice(path: Self.webcamPath, backend: backend),
                                    configuration: PinConfiguration(pixelFormat: .yuyv))
        try live.start()
        try steady.start()
        let group = try PinGroup([live, steady])
        defer { group.stop() }
        var sizes = [Int(live.format.planes[0].sizeImage), Int(steady.format.planes[0].sizeImage)]
        XCTAssertEqual(sizes, [1280 * 720 * 2, 320 * 180 * 2])
        var frames = [0, 0]
        var afterChange = [0, 0]
        var changes: [FormatChange] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while changes.isEmpty || afterChange[0] < 10 || afterChange[1] < 10 {
            guard ContinuousClock.now < deadline else {
                return XCTFail("frames \(frames), after the change \(afterChange), \(changes.count) change(s) within 20 s")
            }
            if frames[0] == 5, changes.isEmpty, backend.pendingEventCount(path: Self.path) == 0 {
                XCTAssertTrue(backend.changeSource(path: Self.path, width: 640, height: 480))
            }
            guard let event = try group.next(timeout: .seconds(5)) else { continue }
            switch consume event {
            case .frame(let pin, let pointer):
                XCTAssertEqual(pointer.info.planes[0].bytesUsed, sizes[pin], "pin \(pin): a frame of another size than its format")
                frames[pin] += 1
                if !changes.isEmpty { afterChange[pin] += 1 }
            case .formatChanged(let pin, let change):
                XCTAssertEqual(pin, 0, "only the HDMI pin changes")
                sizes[pin] = Int(change.format.planes[0].sizeImage)
                changes.append(change)
            case .noSignal(let pin, let loss): return XCTFail("pin \(pin): unexpected no signal: \(loss)")
            case .ended(let pin, let error): return XCTFail("pin \(pin) ended: \(error)")
            }
        }
        XCTAssertEqual(changes.count, 1)
        XCTAssertEqual(changes.first.map { [$0.format.width, $0.format.height] }, [640, 480])
        XCTAssertEqual(sizes, [640 * 480 * 2, 320 * 180 * 2])
        XCTAssertEqual(frames[0], 5 + afterChange[0], "no frame of pin 0 between the request and the change")
        XCTAssertTrue(live.isStreaming && steady.isStreaming)
        XCTAssertEqual(live.formatGeneration, 1)
        XCTAssertEqual(steady.formatGeneration, 0)
    }

    /// A USERPTR candidate whose buffers hold a 640x480 frame is rejected after a change to
    /// 1280x720: the restart falls back to the kernel pool, and frames have the new size.
    func testACandidateThatNoLongerFitsIsRejectedAfterTheChange() throws {
        let backend = makeBackend(width: 640, height: 480)
        let pin = try makePin(backend)
        defer { pin.stop() }
        XCTAssertEqual([pin.format.width, pin.format.height], [640, 480])
        let smallFrame = Int(pin.format.planes[0].sizeImage)
        let candidate = UserPointerAllocator(planeSizes: [smallFrame])
        let started = try pin.start(AllocatorSelection(candidates: [candidate]))
        XCTAssertTrue(started.chosen === candidate, "\(started.rejections)")
        XCTAssertFalse(started.fellBackToDefault)
        XCTAssertEqual(backend.queueState(path: Self.path)?.memory, .userPointer)
        for _ in 0..<2 { XCTAssertEqual(try nextFrame(pin, produce: backend).planes[0].bytesUsed, smallFrame) }

        XCTAssertTrue(backend.changeSource(path: Self.path, width: 1280, height: 720))
        let followed = try expectFormatChange(pin)
        XCTAssertEqual([followed.format.width, followed.format.height], [1280, 720])
        let largeFrame = Int(followed.format.planes[0].sizeImage)
        XCTAssertEqual(largeFrame, 1280 * 720 * 2)
        XCTAssertTrue(followed.selection.fellBackToDefault)
        XCTAssertTrue(followed.selection.chosen is KernelPoolAllocator, followed.selection.chosen.name)
        let rejection = try XCTUnwrap(followed.selection.rejections.first, "the candidate is rejected")
        XCTAssertEqual(followed.selection.rejections.count, 1)
        XCTAssertEqual(rejection.allocator, candidate.name)
        XCTAssertTrue(rejection.reason.contains("\(smallFrame)") && rejection.reason.contains("\(largeFrame)"), rejection.reason)
        XCTAssertEqual(pin.allocator?.name, followed.selection.chosen.name)
        XCTAssertEqual(backend.queueState(path: Self.path)?.memory, .mmap)
        for _ in 0..<3 { XCTAssertEqual(try nextFrame(pin, produce: backend).planes[0].bytesUsed, largeFrame) }
    }

    /// Twenty changes from one thread while another fills buffers and the consumer follows:
    /// changes may arrive during a restart or merge into one event, but every frame has the
    /// size and generation of the last change reported, and the pin ends in the last timings.
    func testRepeatedChangesFromAnotherThreadWhileFramesArrive() throws {
        let backend = makeBackend(width: 1280, height: 720)
        let pin = try makePin(backend)
        defer { pin.stop() }
        try pin.start()
        let running = Locked(true)
        let producerDone = DispatchSemaphore(value: 0)
        let changerDone = DispatchSemaphore(value: 0)
        Thread {
            while running.withLock({ $0 }) {
                backend.produceFrames(path: Self.path, count: 1)
                usleep(300)
            }
            producerDone.signal()
        }.start()
        let sizes = [SimulatedFrameSize(width: 640, height: 480), SimulatedFrameSize(width: 1280, height: 720)]
        Thread {
            for k in 0..<20 {
                usleep(3_000)
                backend.changeSource(path: Self.path, width: sizes[k % 2].width, height: sizes[k % 2].height)
            }
            changerDone.signal()
        }.start()
        defer {
            running.withLock { $0 = false }
            _ = producerDone.wait(timeout: .now() + 10)
        }

        var expectedSize = Int(pin.format.planes[0].sizeImage)
        var generation: UInt64 = 0
        var changes = 0
        var framesSinceChange = 0
        var changerFinished = false
        let deadline = ContinuousClock.now + .seconds(30)
        // Done once the changer has finished, its last event has been followed and frames come.
        while !(changerFinished && backend.pendingEventCount(path: Self.path) == 0 && !pin.isFollowingSourceChange
                && framesSinceChange >= 3) {
            guard ContinuousClock.now < deadline else {
                return XCTFail("after 30 s: \(changes) change(s) followed, \(framesSinceChange) frame(s) since, changer finished: \(changerFinished)")
            }
            if !changerFinished { changerFinished = changerDone.wait(timeout: .now()) == .success }
            guard let event = try pin.nextEvent(timeout: .seconds(1), keepLeadingEdge: false) else { continue }
            switch consume event {
            case .frame(let pointer):
                XCTAssertEqual(pointer.info.planes[0].bytesUsed, expectedSize, "a frame of another size than the last change's")
                XCTAssertEqual(pointer.info.formatGeneration, generation)
                framesSinceChange += 1
            case .formatChanged(let change):
                changes += 1
                XCTAssertEqual(change.generation, generation + 1, "generations go up by one")
                XCTAssertEqual(change.timings.map { [$0.width, $0.height] }, [change.format.width, change.format.height])
                generation = change.generation
                expectedSize = Int(change.format.planes[0].sizeImage)
                framesSinceChange = 0
            case .noSignal(let loss):
                return XCTFail("unexpected no signal: \(loss)")
            }
        }
        XCTAssertEqual([pin.format.width, pin.format.height], [1280, 720], "the last timings sent")
        XCTAssertGreaterThanOrEqual(changes, 1)
        XCTAssertLessThanOrEqual(changes, 20, "at most one restart per change")
        XCTAssertEqual(pin.statistics.sourceChanges, changes)
        XCTAssertEqual(pin.formatGeneration, generation)
        XCTAssertNil(pin.failure)
        print("repeated source changes: 20 sent, \(changes) followed, \(pin.statistics.droppedAtSourceChange) frame(s) dropped at them")
    }

    /// stop() from another thread while the consumer waits for a signal: the wait ends (nil),
    /// the subscription goes, the buffers are freed, and a signal coming back restarts nothing.
    func testStopWhileWaitingForASignalEndsTheWait() throws {
        let backend = makeBackend(width: 1280, height: 720)
        let pin = try makePin(backend)
        try pin.start()
        XCTAssertTrue(backend.setSignal(path: Self.path, present: false))
        guard let event = try pin.nextEvent(timeout: .seconds(5)) else { return XCTFail("no event within 5 s of the signal going") }
        guard case .noSignal = consume event else { return XCTFail("expected no signal") }
        let pollsBefore = backend.pollCount(path: Self.path)
        let returned = DispatchSemaphore(value: 0)
        let outcome = Locked<String?>(nil)
        Thread {
            do {
                let next = try pin.nextEvent(timeout: .seconds(30))
                outcome.withLock { $0 = next == nil ? "nil" : "an event" }
            } catch {
                outcome.withLock { $0 = "\(error)" }
            }
            returned.signal()
        }.start()
        let pollDeadline = ContinuousClock.now + .seconds(10)
        while backend.pollCount(path: Self.path) == pollsBefore {
            guard ContinuousClock.now < pollDeadline else { return XCTFail("the waiting thread never polled") }
            usleep(1000)
        }
        pin.stop()
        XCTAssertEqual(returned.wait(timeout: .now() + 10), .success, "stop() did not end the wait for a signal")
        XCTAssertEqual(outcome.withLock { $0 }, "nil")
        XCTAssertFalse(pin.isFollowingSourceChange)
        XCTAssertNil(pin.signalLoss)
        XCTAssertEqual(backend.subscriptionCount(path: Self.path), 0, "stop() unsubscribes")
        XCTAssertEqual(backend.queueState(path: Self.path)?.bufferCount, 0)
        XCTAssertTrue(backend.setSignal(path: Self.path, present: true))
        XCTAssertEqual(backend.pendingEventCount(path: Self.path), 0, "nobody is subscribed")
        XCTAssertThrowsError(try pin.advance(timeout: .zero), "the pin is stopped") { XCTAssertEqual(($0 as? CaptureError)?.kind, .invalidState, "\($0)") }
        XCTAssertEqual(pin.statistics.sourceChanges, 0)
    }

    // MARK: - Helpers

    /// A backend with a device at ``path`` whose HDMI input has a source of `width` x `height`.
    private func makeBackend(width: UInt32, height: UInt32, production: SimulatedFrameProduction = .manual) -> SimulatedV4L2Backend {
        SimulatedV4L2Backend(path: Self.path, configuration: SimulatedDeviceConfiguration(
            production: production, hdmiSource: SimulatedHDMISource(width: width, height: height)))
    }

    /// A YUYV pin on the HDMI input (following source changes, the default).
    private func makePin(_ backend: SimulatedV4L2Backend) throws -> CapturePin {
        try CapturePin(device: try VideoDevice(path: Self.path, backend: backend),
                       configuration: PinConfiguration(input: Self.hdmi, pixelFormat: .yuyv))
    }

    /// Fills one buffer, then takes the frame (its pointer released at once); anything else fails.
    private func nextFrame(_ pin: CapturePin, produce backend: SimulatedV4L2Backend,
                           file: StaticString = #filePath, line: UInt = #line) throws -> FrameInfo {
        XCTAssertEqual(backend.produceFrames(path: Self.path, count: 1), 1, "no queued buffer to fill", file: file, line: line)
        guard let event = try pin.nextEvent(timeout: .seconds(5), keepLeadingEdge: false) else {
            XCTFail("no frame within 5 s", file: file, line: line)
            throw CaptureError(.invalidState, "no frame")
        }
        guard case .frame(let pointer) = consume event else {
            XCTFail("expected a frame", file: file, line: line)
            throw CaptureError(.invalidState, "not a frame")
        }
        return pointer.info
    }

    /// The next event, which must be a format change (no frame first).
    private func expectFormatChange(_ pin: CapturePin, timeout: Duration = .seconds(5),
                                    file: StaticString = #filePath, line: UInt = #line) throws -> FormatChange {
        guard let event = try pin.nextEvent(timeout: timeout, keepLeadingEdge: false) else {
            XCTFail("no format change within \(timeout)", file: file, line: line)
            throw CaptureError(.invalidState, "no format change")
        }
        switch consume event {
        case .formatChanged(let change): return change
        case .frame(let pointer):
            XCTFail("a frame (\(pointer.info.planes[0].bytesUsed) bytes) before the format change", file: file, line: line)
        case .noSignal(let loss):
            XCTFail("no signal instead of a format change: \(loss)", file: file, line: line)
        }
        throw CaptureError(.invalidState, "not a format change")
    }

    private func describe(_ event: consuming PinEvent) -> String {
        switch consume event {
        case .frame(let pointer): return "a frame of \(pointer.info.planes[0].bytesUsed) bytes"
        case .formatChanged(let change): return "a format change to \(change.format.width)x\(change.format.height)"
        case .noSignal(let loss): return "no signal: \(loss)"
        }
    }

    private func catchV4L2(_ body: () throws(V4L2Error) -> Void) -> V4L2Error? {
        do throws(V4L2Error) {
            try body()
            return nil
        } catch {
            return error
        }
    }
}
