#if canImport(Glibc)
import Glibc
#endif

/// CLOCK_MONOTONIC itself is V4L2's `MonotonicClock`.
enum Clock {
    /// CLOCK_MONOTONIC_COARSE in nanoseconds: the last timer tick (1-10 ms old), for frame
    /// timeouts and the progress line, which a tick does not change. The vDSO reads it without
    /// the clocksource, so it is no system call even where CLOCK_MONOTONIC is one (QEMU TCG
    /// guests: strace counted 5 clock_gettime calls per frame before).
    @inline(__always)
    static func coarseNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    /// User plus system CPU time of the process, in microseconds.
    static func cpuMicroseconds() -> Int64 {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Int64(usage.ru_utime.tv_sec) * 1_000_000 + Int64(usage.ru_utime.tv_usec)
            + Int64(usage.ru_stime.tv_sec) * 1_000_000 + Int64(usage.ru_stime.tv_usec)
    }

    /// `seconds` in nanoseconds, saturating: a duration beyond Int64's nanoseconds (about 292
    /// years) is `Int64.max`, one below `Int64.min` is `Int64.min`, NaN is 0. `Int64(Double)`
    /// traps on a value out of range (`--timeout 1e10` once crashed with SIGILL).
    static func nanoseconds(seconds: Double) -> Int64 {
        let nanoseconds = seconds * 1e9
        if nanoseconds.isNaN { return 0 }
        // Double(Int64.max) rounds up to 2^63, itself out of range.
        if nanoseconds >= Double(Int64.max) { return .max }
        if nanoseconds <= Double(Int64.min) { return .min }
        return Int64(nanoseconds)
    }

    /// `start` plus `seconds`, saturating at Int64's ends: a deadline far away is "never".
    static func deadline(_ start: Int64, plusSeconds seconds: Double) -> Int64 {
        let (sum, overflow) = start.addingReportingOverflow(nanoseconds(seconds: seconds))
        guard overflow else { return sum }
        return seconds > 0 ? .max : .min
    }
}
