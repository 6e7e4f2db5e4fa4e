import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A flag that asks a capture to stop after the current frame. Safe to set from a signal
/// handler (a lock-free atomic store).
public final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    /// Asks the capture to stop.
    public func request() { flag.store(true, ordering: .relaxed) }
    /// Sets the flag and returns whether it was already set.
    public func exchange() -> Bool { flag.exchange(true, ordering: .relaxed) }
    public var isRequested: Bool { flag.load(ordering: .relaxed) }
    public func reset() { flag.store(false, ordering: .relaxed) }
}

/// SIGINT and SIGTERM handling for `framedump capture`: the first signal sets ``flag`` so the
/// capture loop (which polls with short timeouts) stops cleanly after the current frame; a
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
