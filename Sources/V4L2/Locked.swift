#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a pthread mutex: `withLock` gives exclusive, in-place access.
///
/// FrameBridge uses this rather than `Synchronization.Mutex` because on Linux that mutex
/// locks inside the prebuilt Swift runtime library, where ThreadSanitizer cannot see it, so
/// every access under it is reported as a race. ThreadSanitizer intercepts
/// `pthread_mutex_lock`, so a TSan run checks the real locking. Uncontended, a lock round
/// trip costs about as much; nothing is allocated per call.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let result = pthread_mutex_init(mutex, nil)
        precondition(result == 0, "pthread_mutex_init failed: \(result)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with the value while holding the lock. `body` must not take this lock again.
    @inline(__always)
    public func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
