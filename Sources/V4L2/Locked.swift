#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a pthread mutex: `withLock` gives exclusive, in-place access.
///
/// FrameBridge uses this rather than `Synchronization.Mutex` because on Linux that mutex
/// locks inside the prebuilt Swift runtime library, where ThreadSanitizer cannot see it, so
/// every access under it is reported as a race. ThreadSanitizer intercepts
/// `pthread_mutex_lock`, so a TSan run checks the real locking.
///
/// The value lives in its own allocation rather than in a stored `var`: the mutex is what makes
/// access exclusive, and a stored property would add a dynamic exclusivity check to every call
/// (and to every access nested inside the closure). Nothing is allocated per call.
///
/// `package`: the modules of this package and its tests share it; it is not API. Sendable
/// when its value is: the lock makes the access exclusive, not the value thread-safe.
package final class Locked<Value: ~Copyable> {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    @usableFromInline let storage: UnsafeMutablePointer<Value>

    package init(_ value: consuming Value) {
        storage = .allocate(capacity: 1)
        storage.initialize(to: value)
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let result = pthread_mutex_init(mutex, nil)
        precondition(result == 0, "pthread_mutex_init failed: \(result)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
        storage.deinitialize(count: 1)
        storage.deallocate()
    }

    /// Runs `body` with the value while holding the lock. `body` must not take this lock again.
    @inlinable @inline(__always)
    package func withLock<Result: ~Copyable, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&storage.pointee)
    }
}

extension Locked: @unchecked Sendable where Value: Sendable & ~Copyable {}
