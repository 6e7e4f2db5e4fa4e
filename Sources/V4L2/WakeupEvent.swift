import CV4L2
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd that wakes a thread waiting in ``VideoDevice/poll(events:wakeup:timeoutMilliseconds:)``
/// at once (GstPoll's control fd): `stop()`, a signal handler or a cancelled task signals it
/// instead of the waiter polling in short slices.
///
/// ``signal()`` is async-signal-safe (one write(2)), so a SIGINT handler may call it.
public final class WakeupEvent: Sendable {
    /// The eventfd (non-blocking, close-on-exec).
    public let descriptor: Int32

    public init() throws(V4L2Error) {
        let fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard fd >= 0 else {
            throw V4L2Error(device: "eventfd", operation: "eventfd", errno: .current, detail: "cannot create the wake-up event")
        }
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Makes the descriptor readable until ``drain()``. Async-signal-safe.
    public func signal() {
        var one: UInt64 = 1
        // EAGAIN only when the counter is at its maximum: it is readable then anyway.
        _ = write(descriptor, &one, 8)
    }

    /// Resets the event; returns whether it was signalled.
    @discardableResult
    public func drain() -> Bool {
        var value: UInt64 = 0
        return read(descriptor, &value, 8) == 8
    }
}
