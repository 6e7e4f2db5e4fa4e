import Dispatch
import Synchronization
import V4L2

/// A captured frame handed out by ``CapturedFrames``: a class wrapper around a
/// ``StreamPointer``, so it can travel through an `AsyncSequence` and between tasks. The frame
/// goes back to the driver when the last `CapturedFrame` referencing it is gone (or on
/// ``release()``).
///
/// Its pointer is under a lock: ``withLockedPayload(_:)-((FramePayload)->R)`` and ``release()`` may be called from
/// any thread; a release waits for a payload closure under way to return.
///
/// Unlike ``CapturePin/next(timeout:keepLeadingEdge:)``, each element is one small heap object;
/// use the pointer API on the hot path when every allocation counts.
public final class CapturedFrame: Sendable {
    private let pointer: Locked<StreamPointer?>
    /// The frame's metadata.
    public let info: FrameInfo

    init(_ pointer: consuming StreamPointer) {
        info = pointer.info
        self.pointer = Locked(Optional(pointer))
    }

    /// Locks the frame, runs `body` (which cannot throw) with its bytes, and unlocks. `body`
    /// must not call ``release()`` on this frame.
    ///
    /// - Throws: ``CaptureError/Kind/frameCancelled`` when the frame was cancelled or released.
    public func withLockedPayload<R>(_ body: (borrowing FramePayload) -> R) throws(CaptureError) -> R {
        try withHeldPointer(released: { $0 }) { (held: inout StreamPointer) throws(CaptureError) -> R in
            try held.withLockedPayload(body)
        }
    }

    /// Locks the frame, runs `body` with its bytes, and unlocks. `body` must not call
    /// ``release()`` on this frame.
    ///
    /// - Throws: ``LockedPayloadError/lock(_:)`` with ``CaptureError/Kind/frameCancelled``
    ///   when the frame was cancelled or released; ``LockedPayloadError/body(_:)`` with `body`'s error.
    public func withLockedPayload<R, E: Error>(_ body: (borrowing FramePayload) throws(E) -> R) throws(LockedPayloadError<E>) -> R {
        try withHeldPointer(released: { .lock($0) }) { (held: inout StreamPointer) throws(LockedPayloadError<E>) -> R in
            try held.withLockedPayload(body)
        }
    }

    /// Runs `body` on the held pointer under the lock, and puts it back whatever `body` does;
    /// a released frame throws `released` of the frameCancelled error.
    private func withHeldPointer<R, Failure: Error>(released: (CaptureError) -> Failure,
                                                    _ body: (inout StreamPointer) throws(Failure) -> R) throws(Failure) -> R {
        let sequence = info.sequence
        return try pointer.withLock { (pointer: inout StreamPointer?) throws(Failure) -> R in
            guard var held = pointer.take() else {
                throw released(CaptureError(.frameCancelled, "frame \(sequence) was released"))
            }
            let result: Result<R, Failure>
            do throws(Failure) {
                result = .success(try body(&held))
            } catch {
                result = .failure(error)
            }
            pointer = consume held
            return try result.get()
        }
    }

    /// Gives the frame back now (QBUF once no other reference holds it).
    public func release() {
        let taken = pointer.withLock { $0.take() }
        _ = consume taken
    }
}

/// The frames of a started pin as an `AsyncSequence`.
///
/// The wait for each frame runs on a dispatch queue of the sequence's own, not on a thread of
/// Swift's cooperative pool, so other tasks go on while the device is quiet. Cancelling the
/// task wakes the wait at once (the pin's wake-up eventfd), stops streaming (STREAMOFF), and
/// ends the sequence cleanly; so does ``CapturePin/stop()`` from elsewhere. A fatal error ends
/// it by throwing.
public struct CapturedFrames: AsyncSequence, Sendable {
    public typealias Element = CapturedFrame
    let pin: CapturePin
    let limit: Int?
    let queue: DispatchQueue

    public struct AsyncIterator: AsyncIteratorProtocol {
        let pin: CapturePin
        let limit: Int?
        let queue: DispatchQueue
        var produced = 0

        public mutating func next() async throws -> CapturedFrame? {
            if let limit, produced >= limit { return nil }
            let pin = pin
            guard let waited = try await waitOffCooperativePool(on: queue, wake: { pin.wake() },
                                                                 wait: { cancelled throws(CaptureError) in try Self.wait(pin, cancelled: cancelled) }) else {
                pin.stop() // the task was cancelled
                return nil
            }
            guard let frame = waited else { return nil }
            produced += 1
            return frame
        }

        /// Blocks (on the sequence's queue) until a frame, a cancellation or a stop.
        private static func wait(_ pin: CapturePin, cancelled: CancellationFlag) throws(CaptureError) -> CapturedFrame? {
            while !cancelled.isSet {
                if let pointer = try pin.next(timeout: .seconds(3600), keepLeadingEdge: false) {
                    return CapturedFrame(pointer)
                }
                // Woken or timed out: end when the pin was stopped; a failure throws on the next wait.
                if pin.wasStoppedByCaller { return nil }
            }
            return nil
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(pin: pin, limit: limit, queue: queue)
    }
}

/// Runs `wait` on `queue`, off Swift's cooperative pool, and hands its result to the task.
/// Cancelling the task sets the flag `wait` checks and calls `wake` (which ends the wait at once).
/// Returns nil when the task was cancelled; the caller stops its stream then.
func waitOffCooperativePool<T: Sendable>(on queue: DispatchQueue, wake: @escaping @Sendable () -> Void,
                                         wait: @escaping @Sendable (CancellationFlag) throws(CaptureError) -> T) async throws -> T? {
    let cancelled = CancellationFlag()
    let value = try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            queue.async {
                // The value (a frame's reference) moves to the task (consume): this thread must
                // not hold the last one, or the frame would go back after the consumer let go.
                let value: T
                do {
                    value = try wait(cancelled)
                } catch {
                    continuation.resume(throwing: error)
                    return
                }
                continuation.resume(returning: consume value)
            }
        }
    } onCancel: {
        cancelled.set()
        wake()
    }
    return cancelled.isSet ? nil : value
}

/// Set by a task's cancellation handler, read by the waiting thread.
final class CancellationFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

extension CapturePin {
    /// The pin's frames as an `AsyncSequence` (the pin must be started); `limit` ends it after
    /// that many frames. It goes on across a source change the pin follows: each frame's
    /// ``FrameInfo/formatGeneration`` says which format it has (``CapturePin/lastFormatChange``).
    public func frames(limit: Int? = nil) -> CapturedFrames {
        CapturedFrames(pin: self, limit: limit, queue: DispatchQueue(label: "FrameBridge.CapturedFrames \(device.path)"))
    }

    /// Whether the pin was stopped with ``stop()`` (not failed, not streaming, not stopped
    /// for a source change it follows).
    var wasStoppedByCaller: Bool {
        core.state.withLock { $0.machine.wasStoppedByCaller }
    }
}
