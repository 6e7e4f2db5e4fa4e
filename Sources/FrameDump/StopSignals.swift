import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// A flag that asks a capture to stop after the current frame. Safe to set from a signal
/// handler (lock-free atomics and one write(2)): setting it also wakes the capture's pin
/// through its wake-up eventfd (``attach(wakeupDescriptor:)``), so a wait for a frame ends at once.
public final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    /// The attached pin's wake-up eventfd, or -1.
    private let wakeupDescriptor = Atomic<Int32>(-1)
    /// Wakes under way (a handler between reading the descriptor and writing to it).
    private let waking = Atomic<Int>(0)

    public init() {}

    /// Asks the capture to stop.
    public func request() {
        flag.store(true, ordering: .sequentiallyConsistent)
        wakeAttached()
    }

    /// Sets the flag and returns whether it was already set.
    public func exchange() -> Bool {
        let was = flag.exchange(true, ordering: .sequentiallyConsistent)
        if !was { wakeAttached() }
        return was
    }

    public var isRequested: Bool { flag.load(ordering: .sequentiallyConsistent) }
    public func reset() { flag.store(false, ordering: .sequentiallyConsistent) }

    /// Wakes `descriptor` (a pin's ``CapturePin/wakeupDescriptor``) when the flag is set from
    /// now on, and at once when it is set already.
    public func attach(wakeupDescriptor descriptor: Int32) {
        wakeupDescriptor.store(descriptor, ordering: .sequentiallyConsistent)
        if isRequested { wakeAttached() }
    }

    /// Stops waking the attached descriptor; when it returns, no handler will write to it, so
    /// the descriptor may be closed (its pin released).
    public func detach() {
        wakeupDescriptor.store(-1, ordering: .sequentiallyConsistent)
        while waking.load(ordering: .sequentiallyConsistent) > 0 { sched_yield() }
    }

    private func wakeAttached() {
        waking.add(1, ordering: .sequentiallyConsistent)
        let descriptor = wakeupDescriptor.load(ordering: .sequentiallyConsistent)
        if descriptor >= 0 { WakeupEvent.signal(descriptor: descriptor) }
        waking.subtract(1, ordering: .sequentiallyConsistent)
    }
}

/// SIGINT and SIGTERM handling for `framedump capture`: the first signal sets ``flag`` (which
/// wakes the capture's pin at once) so the capture stops cleanly after the current frame; a
/// second one terminates the process the default way.
public enum StopSignals {
    /// The flag the handlers set.
    public static let flag = StopFlag()

    /// Installs the handlers (and ignores SIGPIPE, so a closed pipe is a write error, EPIPE).
    public static func install() {
        _ = flag.isRequested // initialize the global before a handler can run
        let handler: @convention(c) (Int32) -> Void = { signalNumber in
            if StopSignals.flag.exchange() {
                signal(signalNumber, SIG_DFL)
                raise(signalNumber)
            }
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        signal(SIGPIPE, SIG_IGN)
    }
}
