import Dispatch
import FrameBridge
import FrameBridgeTestSupport
import V4L2
import V4L2Simulator
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Several pins waited on with one poll (issue 15): frames carry their pin, a failing device
/// ends only its own stream, and the group wakes at once.
final class PinGroupTests: XCTestCase {
    private let paths = ["/dev/video10", "/dev/video11", "/dev/video12"]

    private func makeGroup(_ production: SimulatedFrameProduction = .onDemand, allOrNothing: Bool = false,
                           multiplanar: [Bool] = [false, true, false]) throws -> (SimulatedV4L2Backend, PinGroup) {
        let backend = SimulatedV4L2Backend()
        var pins: [CapturePin] = []
        for (path, layout) in zip(paths, multiplanar.map { $0 ? Layout.multiPlanar : Layout.singlePlanar }) {
            backend.addDevice(path: path, configuration: layout.deviceConfiguration(production: production))
            let pin = try CapturePin(device: try VideoDevice(path: path, backend: backend),
                                     configuration: PinConfiguration(pixelFormat: layout.pixelFormat, width: 320, height: 180))
            try pin.start()
            pins.append(pin)
        }
        return (backend, try PinGroup(pins, allOrNothing: allOrNothing))
    }

    func testFramesOfEveryPinComeRoundRobinWithTheirPin() throws {
        let (_, group) = try makeGroup()
        var perPin = [0, 0, 0]
        var lastSequence: [UInt32?] = [nil, nil, nil]
        var order: [Int] = []
        for _ in 0..<30 {
            guard let event = try group.next(timeout: .seconds(5)) else { return XCTFail("no frame") }
            switch consume event {
            case .frame(let pin, let pointer):
                perPin[pin] += 1
                order.append(pin)
                if let last = lastSequence[pin] { XCTAssertEqual(pointer.info.sequence, last + 1, "pin \(pin)") }
                lastSequence[pin] = pointer.info.sequence
                XCTAssertTrue(pointer.info.isMonotonic)
            case .ended(let pin, let error):
                XCTFail("pin \(pin) ended: \(error)")
            case .formatChanged(let pin, _):
                XCTFail("pin \(pin): these devices have no live input, so no source change")
            case .noSignal(let pin, _):
                XCTFail("pin \(pin): these devices have no live input, so no source change")
            }
        }
        XCTAssertEqual(perPin, [10, 10, 10], "every ready pin is served in turn: \(order)")
        group.stop()
        XCTAssertFalse(group.pins.contains { $0.isStreaming })
    }

    func testOneDeviceFailingEndsOnlyItsStream() throws {
        let (backend, group) = try makeGroup()
        var frames = [0, 0, 0]
        var endings: [(Int, CaptureError.Kind)] = []
        while frames[0] + frames[2] < 40 {
            if frames[1] == 3, endings.isEmpty { XCTAssertTrue(backend.injectFault(.disconnect, path: paths[1])) }
            guard let event = try group.next(timeout: .seconds(5)) else { return XCTFail("the others stopped too") }
            switch consume event {
            case .frame(let pin, _): frames[pin] += 1
            case .ended(let pin, let error): endings.append((pin, error.kind))
            case .formatChanged(let pin, _): XCTFail("pin \(pin): these devices have no live input, so no source change")
            case .noSignal(let pin, _): XCTFail("pin \(pin): these devices have no live input, so no source change")
            }
        }
        XCTAssertEqual(endings.count, 1)
        XCTAssertEqual(endings.first?.0, 1)
        XCTAssertEqual(endings.first?.1, .disconnected)
        XCTAssertLessThanOrEqual(frames[1], 4)
        XCTAssertGreaterThanOrEqual(frames[0], 15)
        XCTAssertGreaterThanOrEqual(frames[2], 15)
        XCTAssertEqual(group.endings[1]?.kind, .disconnected)
        XCTAssertNil(group.endings[0])
        XCTAssertTrue(group.pins[0].isStreaming && group.pins[2].isStreaming)
        group.stop()
    }

    func testAllOrNothingStopsEveryPinAndThrows() throws {
        let (backend, group) = try makeGroup(allOrNothing: true)
        for _ in 0..<6 { _ = try group.next(timeout: .seconds(5)) }
        XCTAssertTrue(backend.injectFault(.fatalError, path: paths[2]))
        var thrown: CaptureError?
        do {
            for _ in 0..<20 { _ = try group.next(timeout: .seconds(5)) }
        } catch {
            thrown = error
        }
        XCTAssertEqual(thrown?.kind, .fatalStreamingError)
        XCTAssertFalse(group.pins.contains { $0.isStreaming }, "all or nothing stops every pin")
        XCTAssertTrue(group.isFinished)
    }

    func testAQuietGroupWaitsInOnePollAndWakesAtOnce() throws {
        let (backend, group) = try makeGroup(.manual)
        let before = paths.map { backend.pollCount(path: $0) }
        let woke = Locked<Double?>(nil)
        let wokenAt = Locked<ContinuousClock.Instant?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            let event = try? group.next(timeout: .seconds(30))
            let gotNil = event == nil
            _ = consume event
            woke.withLock { $0 = gotNil ? (wokenAt.withLock { $0.map { milliseconds(since: $0) } } ?? -2) : -1 }
            done.signal()
        }.start()
        // Wake once the other thread is in its poll of the set.
        while backend.pollCount(path: paths[0]) == before[0] { usleep(1000) }
        usleep(100_000)
        wokenAt.withLock { $0 = ContinuousClock.now }
        group.wake()
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        let after = try XCTUnwrap(woke.withLock { $0 })
        let polls = zip(before, paths.map { backend.pollCount(path: $0) }).map { $1 - $0 }
        print("pin group: wake() to return \(String(format: "%.2f", after)) ms; polls per device \(polls)")
        XCTAssertGreaterThanOrEqual(after, 0)
        XCTAssertLessThan(after, 1000)
        XCTAssertEqual(polls, [1, 1, 1], "one poll of the set, not slices")
        // A frame on the middle device alone comes out of the group.
        XCTAssertEqual(backend.produceFrames(path: paths[1], count: 1), 1)
        guard let event = try group.next(timeout: .seconds(5)) else { return XCTFail("no frame") }
        switch consume event {
        case .frame(let pin, _): XCTAssertEqual(pin, 1)
        case .ended(let pin, let error): XCTFail("pin \(pin) ended: \(error)")
        case .formatChanged(let pin, _): XCTFail("pin \(pin): these devices have no live input, so no source change")
        case .noSignal(let pin, _): XCTFail("pin \(pin): these devices have no live input, so no source change")
        }
        group.stop()
    }

    func testTheAsyncSequenceCarriesPinsAndEndings() async throws {
        let (backend, group) = try makeGroup()
        var perPin = [0, 0, 0]
        var ended: [Int] = []
        for try await element in group.frames() {
            switch element {
            case .frame(let pin, let frame):
                perPin[pin] += 1
                XCTAssertGreaterThan(try frame.withLockedPayload { $0.plane(0).byteCount }, 0)
                if perPin[pin] == 5 { XCTAssertTrue(backend.injectFault(.disconnect, path: paths[pin])) }
            case .ended(let pin, let error):
                XCTAssertEqual(error.kind, .disconnected)
                ended.append(pin)
            case .formatChanged(let pin, _):
                XCTFail("pin \(pin): these devices have no live input, so no source change")
            case .noSignal(let pin, _):
                XCTFail("pin \(pin): these devices have no live input, so no source change")
            }
        }
        XCTAssertEqual(ended.sorted(), [0, 1, 2], "the sequence ends when every pin has ended")
        XCTAssertTrue(perPin.allSatisfy { (5...6).contains($0) }, "\(perPin)")
        XCTAssertTrue(group.isFinished)
    }

    /// A group has one consumer: a second next() while the first waits (two frames() sequences,
    /// say) is refused with a clear error instead of racing on the poll set and the round robin.
    func testASecondConsumerIsRefusedWhileOneWaits() throws {
        let (_, group) = try makeGroup(.manual)
        defer { group.stop() }
        let waiting = Counter()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            waiting.increment()
            _ = try? group.next(timeout: .seconds(20))
            done.signal()
        }
        // The first consumer is in its poll (manual production: no frame comes).
        while waiting.value == 0 { usleep(1000) }
        usleep(100_000)
        do {
            _ = try group.next(timeout: .milliseconds(10))
            XCTFail("a second consumer was let in while the first waits")
        } catch {
            XCTAssertEqual(error.kind, .invalidState)
            XCTAssertTrue("\(error)".contains("one consumer at a time"), "\(error)")
        }
        group.wake()
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        // Once the first has returned, the next consumer is served.
        let next = try group.next(timeout: .milliseconds(10))
        XCTAssertTrue(next == nil, "no frame is produced")
    }
}
