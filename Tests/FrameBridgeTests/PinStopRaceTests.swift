import CV4L2
import Dispatch
import FrameBridge
import FrameBridgeTestSupport
import SystemPackage
import V4L2
import V4L2Simulator
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// stop() from another place at the worst moments: while a start or a source-change restart
/// sets up its buffers, and between a DQBUF and the pin's look at the buffer. The pin must not
/// stream after stop() returned, and must not take the stop for a misbehaving driver.
final class PinStopRaceTests: XCTestCase {
    private static let path = "/dev/video20"
    private static let hdmi = UInt32(3)

    /// Holds the pin for a hook that runs inside an allocator or a backend call.
    private final class PinBox: @unchecked Sendable {
        var pin: CapturePin?
        let initializations = Counter()
    }

    func testStopWhileASourceChangeRestartSetsUpLeavesThePinStopped() throws {
        let backend = SimulatedV4L2Backend(path: Self.path, configuration: SimulatedDeviceConfiguration(
            production: .manual, hdmiSource: SimulatedHDMISource(width: 1280, height: 720)))
        let box = PinBox()
        // The restart initializes the allocator again: stop() runs right then, on the consumer's
        // own thread, between the restart's claim of the pin and its commit.
        let spy = SpyAllocator(KernelPoolAllocator(), beforeInitialize: {
            box.initializations.increment()
            if box.initializations.value == 2 { box.pin?.stop() }
        })
        let pin = try CapturePin(device: try VideoDevice(path: Self.path, backend: backend),
                                 configuration: PinConfiguration(input: Self.hdmi, pixelFormat: .yuyv))
        box.pin = pin
        defer { box.pin = nil; pin.stop() }
        try pin.start(AllocatorSelection(candidates: [spy]))
        XCTAssertEqual(backend.produceFrames(path: Self.path, count: 1), 1)
        XCTAssertTrue(gotFrame(try pin.next(timeout: .seconds(5), keepLeadingEdge: false)))

        XCTAssertTrue(backend.changeSource(path: Self.path, width: 640, height: 480))
        let event = try pin.nextEvent(timeout: .seconds(5), keepLeadingEdge: false)
        XCTAssertEqual(box.initializations.value, 2, "the restart ran")
        switch consume event {
        case nil: break
        case .formatChanged(let change)?: XCTFail("the restart went on after stop(): streaming at \(change.format.width)x\(change.format.height)")
        case .frame?: XCTFail("a frame after stop()")
        case .noSignal?: XCTFail("no signal instead of the stop")
        }
        XCTAssertFalse(pin.isStreaming, "stop() returned before the restart's commit: the pin must stay stopped")
        XCTAssertFalse(pin.isFollowingSourceChange)
        XCTAssertEqual(spy.steps.last, "delete", "the abandoned restart gave its buffers back")
        XCTAssertEqual(backend.queueState(path: Self.path)?.isStreaming, false)
        XCTAssertThrowsError(try pin.advance(timeout: .milliseconds(50)), "a stopped pin is not streaming")
    }

    func testStopWhileAStartSetsUpLeavesThePinStopped() throws {
        let rig = try SimRig(.singlePlanar)
        let box = PinBox()
        let spy = SpyAllocator(KernelPoolAllocator(), beforeInitialize: { box.pin?.stop() })
        box.pin = rig.pin
        defer { box.pin = nil }
        XCTAssertThrowsError(try rig.pin.start(AllocatorSelection(candidates: [spy]))) { error in
            XCTAssertEqual((error as? CaptureError)?.kind, .invalidState)
        }
        XCTAssertFalse(rig.pin.isStreaming)
        XCTAssertEqual(spy.steps.first, "initialize")
        XCTAssertEqual(spy.steps.last, "delete")
        XCTAssertFalse(rig.queue.isStreaming)
        // A stop that came and went leaves the pin startable.
        box.pin = nil
        try rig.pin.start()
        XCTAssertTrue(gotFrame(try rig.pin.next()))
        rig.pin.stop()
    }

    /// addFrames racing stop(): the pool is never grown or queued after stop() deleted it.
    func testAddFramesRacingStop() throws {
        for round in 0..<20 {
            let rig = try SimRig(.singlePlanar)
            try rig.pin.start()
            let pin = rig.pin
            let done = DispatchSemaphore(value: 0)
            Thread {
                for _ in 0..<4 { try? pin.addFrames(1) }
                done.signal()
            }.start()
            if round % 2 == 0 { usleep(UInt32(round * 20)) }
            pin.stop()
            XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
            rig.assertTornDown("round \(round)")
            XCTAssertThrowsError(try pin.addFrames(1)) { error in
                XCTAssertTrue("\(error)".contains("no buffers to add to"), "\(error)")
            }
        }
    }

    func testStopBetweenADequeueAndItsCheckIsNotADriverViolation() throws {
        let simulator = SimulatedV4L2Backend()
        simulator.addDevice(path: Self.path, configuration: Layout.singlePlanar.deviceConfiguration())
        // Runs once, after the next successful DQBUF, on the consumer's thread.
        let hook = Locked<(@Sendable () -> Void)?>(nil)
        let backend = InterceptingBackend(simulator, name: "hooked") { request, _, answer in
            if answer == nil, request == CV4L2_VIDIOC_DQBUF, let body = hook.withLock({ hook in defer { hook = nil }; return hook }) { body() }
            return answer
        }
        let pin = try CapturePin(device: try VideoDevice(path: Self.path, backend: backend),
                                 configuration: PinConfiguration(pixelFormat: Layout.singlePlanar.pixelFormat, width: 320, height: 180))
        try pin.start()
        XCTAssertTrue(gotFrame(try pin.next(keepLeadingEdge: false)))
        // The next DQBUF succeeds; stop() runs before the pin looks at what it dequeued (no
        // pointer holds a frame, so the stop frees every buffer at once).
        hook.withLock { $0 = { pin.stop() } }
        XCTAssertFalse(gotFrame(try pin.next(timeout: .seconds(2), keepLeadingEdge: false)), "the stop ends the wait")
        let statistics = pin.statistics
        XCTAssertEqual(statistics.driverViolations, 0, "a stop is not the driver's fault: \(statistics.lastViolation ?? "")")
        XCTAssertEqual(statistics.delivered, 1)
        XCTAssertEqual(statistics.lastSequence, 0, "the buffer of the stopped stream is not counted")
        XCTAssertFalse(pin.isStreaming)
    }

    func testOnCancelOfALockedPointerWhoseFrameIsAlreadyCancelledRunsAtUnlock() throws {
        let rig = try SimRig(.singlePlanar)
        try rig.pin.start()
        var pointer = try unwrapPointer(try rig.pin.next())
        try pointer.lock()
        rig.pin.stop()
        XCTAssertFalse(pointer.isValid)
        let ran = Counter()
        pointer.onCancel { ran.increment() }
        XCTAssertEqual(ran.value, 0, "the pointer is locked: its handler waits for the unlock")
        pointer.unlock()
        XCTAssertEqual(ran.value, 1, "the handler runs when the locked pointer unlocks")
        pointer.release()
        XCTAssertEqual(ran.value, 1, "once")
    }
}
