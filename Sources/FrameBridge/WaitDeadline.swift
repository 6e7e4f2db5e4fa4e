import V4L2

/// The end of one wait of a caller's timeout. The clock is read once, when the wait begins,
/// and not at all without a timeout or for a zero one (a ``PinGroup`` asks its ready pin with
/// zero after its own poll); the first poll takes the caller's timeout as it is. Where the
/// clocksource has no vDSO reader (QEMU TCG guests), each clock_gettime is a system call.
struct WaitDeadline {
    /// The timeout in nanoseconds; nil: none.
    let timeout: Int64?
    /// CLOCK_MONOTONIC nanoseconds at which the wait ends; 0 for a zero timeout (already passed).
    let absolute: Int64?
    private var firstRound = true

    init(_ timeout: Duration) {
        self.timeout = CapturePin.nanoseconds(timeout)
        switch self.timeout {
        case nil: absolute = nil
        case 0?: absolute = 0
        case let nanoseconds?: absolute = MonotonicClock.nanoseconds() + nanoseconds
        }
    }

    /// The timeout for the next poll: the caller's in the first round, what is left after;
    /// -1 without a timeout.
    mutating func pollMilliseconds() -> Int32 {
        guard let timeout, let absolute else { return -1 }
        let left = firstRound ? timeout : absolute - MonotonicClock.nanoseconds()
        firstRound = false
        return left <= 0 ? 0 : Int32(clamping: (left + 999_999) / 1_000_000)
    }

    /// Time went by on something other than a poll (handlers ran): the next round reads the clock.
    mutating func timePassed() { firstRound = false }

    /// Whether the wait's time is up.
    var hasPassed: Bool {
        guard let absolute else { return false }
        return absolute == 0 || MonotonicClock.nanoseconds() >= absolute
    }
}
