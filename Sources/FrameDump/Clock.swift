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
}
