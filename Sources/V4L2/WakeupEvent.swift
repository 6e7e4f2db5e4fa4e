import SystemPackage
import CV4L2
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd that wakes a thread waiting in ``VideoDevice/poll(events:wakeup:timeoutMilliseconds:)``
/// at once (GstPoll's control fd): `stop()`, a signal handler or a cancelled task signals it
/// instead of the waiter polling in short slices.
///
/// Two kinds of signal share the counter: ``signal()`` adds ``wakeValue`` (2^32: "stop
/// waiting"), ``nudge()`` adds 1 ("something changed, look again"). ``drain()`` tells them
/// apart from the sum, so a nudge never hides a wake.
public final class WakeupEvent: Sendable {
    /// What ``signal()`` adds to the counter.
    public static let wakeValue: UInt64 = 1 << 32

    /// The eventfd (non-blocking, close-on-exec), owned by this object: closed once, in deinit.
    public let fileDescriptor: FileDescriptor
    /// The eventfd's number, for poll(2) and for a signal handler (``signal(descriptor:)``).
    @inlinable public var descriptor: Int32 { fileDescriptor.rawValue }

    public init() throws(V4L2Error) {
        let fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard fd >= 0 else {
            throw V4L2Error(device: "eventfd", operation: "eventfd", errno: .current, detail: "cannot create the wake-up event")
        }
        fileDescriptor = FileDescriptor(rawValue: fd)
    }

    deinit { try? fileDescriptor.close() }

    /// Wakes the waiter: its wait returns. Async-signal-safe (one write(2)).
    public func signal() { Self.signal(descriptor: descriptor) }

    /// ``signal()`` for a descriptor kept where a signal handler can reach it. Async-signal-safe.
    public static func signal(descriptor: Int32) {
        var value = wakeValue
        // EAGAIN only when the counter is near its maximum: it is readable then anyway.
        _ = write(descriptor, &value, 8)
    }

    /// Makes the waiter look again without ending its wait (a buffer came back).
    public func nudge() {
        var one: UInt64 = 1
        _ = write(descriptor, &one, 8)
    }

    /// Resets the event. Returns whether a ``signal()`` and whether a ``nudge()`` came since the
    /// last drain.
    @discardableResult
    public func drain() -> (woken: Bool, nudged: Bool) {
        var value: UInt64 = 0
        guard read(descriptor, &value, 8) == 8 else { return (false, false) }
        return (value >= Self.wakeValue, value % Self.wakeValue != 0)
    }
}
