import Dispatch
import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// What ``PinGroup/next(timeout:)`` hands back: a frame of one pin, or the end of one pin's
/// stream (its error), after which the others go on.
public enum PinGroupEvent: ~Copyable {
    /// A frame of the pin at `pin` (its index in the group). The pointer holds the frame's only
    /// reference: it is queued again the moment the pointer goes.
    case frame(pin: Int, StreamPointer)
    /// The pin at `pin` failed (a disconnect, a fatal driver error, the end of its stream) and
    /// was stopped; the group no longer waits on it.
    case ended(pin: Int, CaptureError)
    /// The pin at `pin` followed a source change and restarted in a new format: its frames
    /// that follow have it (``CapturePin/nextEvent(timeout:keepLeadingEdge:)``).
    case formatChanged(pin: Int, FormatChange)
    /// The pin at `pin` lost its signal and waits for it; the others go on.
    case noSignal(pin: Int, SignalLoss)
}

/// Several started pins waited on together, as a multi-camera rig needs (a stereo pair, a
/// webcam beside an HDMI grabber): one poll(2) over every device and the group's wake-up
/// eventfd, however many pins.
///
/// Each frame says which pin it came from; pins are served round robin when several are ready,
/// so a fast device cannot starve a slow one. One device's failure or unplug ends that pin's
/// stream with its error (``PinGroupEvent/ended(pin:_:)``) and the others go on, unless the
/// group was made with `allOrNothing`, when it stops every pin and throws.
///
/// All pins share one backend (the kernel's for real devices, or one simulator). Their
/// timestamps are CLOCK_MONOTONIC, so frames of different devices can be related by them
/// (``FrameInfo/timestampNanoseconds``).
///
/// A group has one consumer at a time: ``next(timeout:)`` called while another thread waits in
/// it (or a second ``frames()`` sequence iterated beside the first) throws
/// ``CaptureError/Kind/invalidState``. ``wake()`` and ``stop()`` may be called from any thread.
public final class PinGroup: Sendable {
    /// The pins, in the order given.
    public let pins: [CapturePin]
    /// Whether one pin's failure stops the whole group.
    public let allOrNothing: Bool
    private let backend: any DeviceBackend
    private let wakeup: WakeupEvent
    /// The consumer's side, held by the one consumer for a whole wait.
    private let consumer: Locked<Consumer>
    /// Claimed by the consumer in ``next(timeout:)``: a second one is refused, not serialized.
    private let consuming = Atomic<Bool>(false)
    private let state: Locked<[CaptureError?]>

    /// The poll set (every pin, then the eventfd), where the round robin goes on, and the pins
    /// whose stream has ended (a mirror of `state`, read per wait with no allocation).
    /// Unchecked: `entries` is the group's own buffer, touched only under the consumer lock.
    private struct Consumer: @unchecked Sendable {
        let entries: UnsafeMutableBufferPointer<pollfd>
        var cursor = 0
        var ended: [Bool]
    }

    /// - Precondition: at least one pin, all on one backend.
    public init(_ pins: [CapturePin], allOrNothing: Bool = false) throws(CaptureError) {
        precondition(!pins.isEmpty, "a PinGroup needs at least one pin")
        let backend = pins[0].device.backend
        precondition(pins.allSatisfy { $0.device.backend === backend }, "the pins of a PinGroup must share one backend")
        self.pins = pins
        self.allOrNothing = allOrNothing
        self.backend = backend
        do {
            wakeup = try WakeupEvent()
        } catch {
            throw CaptureError(error)
        }
        let entries = UnsafeMutableBufferPointer<pollfd>.allocate(capacity: pins.count + 1)
        entries.initialize(repeating: pollfd(fd: -1, events: 0, revents: 0))
        consumer = Locked(Consumer(entries: entries, ended: Array(repeating: false, count: pins.count)))
        state = Locked(Array(repeating: nil, count: pins.count))
    }

    deinit {
        consumer.withLock { $0.entries.deallocate() }
    }

    /// The error that ended each pin's stream (nil while it streams).
    public var endings: [CaptureError?] { state.withLock { $0 } }

    /// Whether every pin's stream has ended.
    public var isFinished: Bool { state.withLock { $0.allSatisfy { $0 != nil } } }

    /// Makes the current (or next) ``next(timeout:)`` return nil at once, from any thread.
    public func wake() { wakeup.signal() }

    /// The descriptor that ``wake()`` signals (an eventfd): a signal handler may pass it to
    /// `WakeupEvent.signal(descriptor:)` (async-signal-safe). Valid while the group exists.
    public var wakeupDescriptor: Int32 { wakeup.descriptor }

    /// Takes the pin at `i` out of the group without an error, as when its consumer has all the
    /// frames it wants: the pin stops and the group no longer waits on it; with `allOrNothing`
    /// the others go on. Call it from the consumer thread.
    public func retire(pin i: Int) {
        let retired = consumer.withLock { consumer in
            defer { consumer.ended[i] = true }
            return !consumer.ended[i]
        }
        guard retired else { return }
        state.withLock { $0[i] = CaptureError(.invalidState, "\(pins[i].device.path): retired from the group") }
        pins[i].stop()
    }

    /// Stops every pin (STREAMOFF) and wakes the consumer.
    public func stop() {
        for pin in pins { pin.stop() }
        wake()
    }

    /// The next frame of any pin, or the end of one pin's stream, waiting up to `timeout`
    /// (one deadline for the whole call). Nil when the timeout passed, when ``wake()`` or
    /// ``stop()`` ended the wait, or when every pin has ended.
    ///
    /// - Throws: with `allOrNothing`, the first pin's failure, after stopping every pin.
    public func next(timeout: Duration = .seconds(2)) throws(CaptureError) -> PinGroupEvent? {
        guard consuming.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw CaptureError(.invalidState, "\(pins.map(\.device.path).joined(separator: ", ")): a PinGroup has one consumer at a time, and another thread is waiting in next(timeout:) (or iterating frames())")
        }
        defer { consuming.store(false, ordering: .releasing) }
        return try consumer.withLock { consumer throws(CaptureError) in try next(timeout: timeout, consumer: &consumer) }
    }

    private func next(timeout: Duration, consumer: inout Consumer) throws(CaptureError) -> PinGroupEvent? {
        var deadline = WaitDeadline(timeout)
        let entries = consumer.entries
        let count = pins.count
        while true {
            if !consumer.ended.contains(false) { return nil }
            var restartPending = false
            for i in 0..<count {
                entries[i] = pollfd(fd: consumer.ended[i] ? -1 : pins[i].device.descriptor, events: pins[i].groupPollEvents.rawValue, revents: 0)
                if !consumer.ended[i], pins[i].isFollowingSourceChange, pins[i].isRestartPending {
                    // Its restart waits for stream pointers to let go, with no descriptor to say so.
                    restartPending = true
                }
            }
            entries[count] = pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)
            var milliseconds = deadline.pollMilliseconds()
            if restartPending { milliseconds = milliseconds < 0 ? 10 : min(milliseconds, 10) }
            switch backend.poll(entries, timeoutMilliseconds: milliseconds) {
            case .success: break
            case .failure(.interrupted): continue
            case .failure(let errno):
                throw CaptureError(V4L2Error(device: pins.map(\.device.path).joined(separator: ", "), operation: "poll", errno: errno,
                                             detail: "waiting on the pins of a group"))
            }
            if entries[count].revents != 0, wakeup.drain().woken { return nil }
            // Round robin over the ready pins, from where the last frame came.
            for step in 0..<count {
                let i = (consumer.cursor + step) % count
                guard !consumer.ended[i], entries[i].revents != 0 || (restartPending && pins[i].isRestartPending) else { continue }
                do throws(CaptureError) {
                    let ready = entries[i].revents != 0 ? PollEvents(rawValue: entries[i].revents) : nil
                    if let event = try pins[i].nextEvent(timeout: .zero, keepLeadingEdge: false, ready: ready) {
                        consumer.cursor = (i + 1) % count
                        switch consume event {
                        case .frame(let pointer): return .frame(pin: i, pointer)
                        case .formatChanged(let change): return .formatChanged(pin: i, change)
                        case .noSignal(let loss): return .noSignal(pin: i, loss)
                        }
                    }
                } catch {
                    return try end(pin: i, error, consumer: &consumer)
                }
            }
            if deadline.hasPassed { return nil }
        }
    }

    /// Records the end of pin `i`'s stream; with `allOrNothing`, stops every pin and throws.
    private func end(pin i: Int, _ error: CaptureError, consumer: inout Consumer) throws(CaptureError) -> PinGroupEvent {
        state.withLock { $0[i] = error }
        consumer.ended[i] = true
        pins[i].stop()
        if allOrNothing {
            for (j, pin) in pins.enumerated() where j != i { pin.stop() }
            for j in consumer.ended.indices { consumer.ended[j] = true }
            state.withLock { endings in
                for j in endings.indices where endings[j] == nil {
                    endings[j] = CaptureError(.invalidState, "\(pins[j].device.path): stopped because \(pins[i].device.path) failed (all or nothing)")
                }
            }
            throw error
        }
        return .ended(pin: i, error)
    }

    /// The group's frames as an `AsyncSequence` of ``PinGroupFrames/Element``: each frame with
    /// its pin, and each pin's end. It finishes when every pin has ended or the group was
    /// stopped; cancelling the task stops every pin. The waits run on a dispatch queue of the
    /// sequence's own, off the cooperative pool.
    public func frames() -> PinGroupFrames {
        PinGroupFrames(group: self, queue: DispatchQueue(label: "FrameBridge.PinGroupFrames"))
    }
}

/// ``PinGroup/frames()``.
public struct PinGroupFrames: AsyncSequence, Sendable {
    public enum Element: Sendable {
        /// A frame and the index of the pin it came from.
        case frame(pin: Int, CapturedFrame)
        /// The pin's stream ended with this error; the others go on.
        case ended(pin: Int, CaptureError)
        /// The pin followed a source change; its frames that follow have the new format.
        case formatChanged(pin: Int, FormatChange)
        /// The pin lost its signal and waits for it.
        case noSignal(pin: Int, SignalLoss)
    }

    let group: PinGroup
    let queue: DispatchQueue

    public struct AsyncIterator: AsyncIteratorProtocol {
        let group: PinGroup
        let queue: DispatchQueue

        public mutating func next() async throws -> Element? {
            let group = group
            guard let element = try await waitOffCooperativePool(on: queue, wake: { group.wake() },
                                                                  wait: { cancelled throws(CaptureError) in try Self.wait(group, cancelled: cancelled) }) else {
                group.stop() // the task was cancelled
                return nil
            }
            return element
        }

        private static func wait(_ group: PinGroup, cancelled: CancellationFlag) throws(CaptureError) -> Element? {
            while !cancelled.isSet {
                if let event = try group.next(timeout: .seconds(3600)) {
                    switch consume event {
                    case .frame(let pin, let pointer): return .frame(pin: pin, CapturedFrame(pointer))
                    case .ended(let pin, let error): return .ended(pin: pin, error)
                    case .formatChanged(let pin, let change): return .formatChanged(pin: pin, change)
                    case .noSignal(let pin, let loss): return .noSignal(pin: pin, loss)
                    }
                }
                if group.isFinished || group.pins.allSatisfy({ $0.wasStoppedByCaller }) { return nil }
            }
            return nil
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(group: group, queue: queue)
    }
}
