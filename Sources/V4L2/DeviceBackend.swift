import SystemPackage
import CV4L2
#if canImport(Glibc)
import Glibc
#endif

/// The system calls the typed layer is built from: open, close, ioctl, mmap, munmap, poll.
///
/// `KernelBackend` makes the raw kernel calls, `LibV4L2Backend` goes through libv4l2
/// (`v4l2_open`, `v4l2_ioctl`, `v4l2_mmap`), and `V4L2Simulator` answers from an
/// in-memory device for tests. A backend makes exactly one call per method: it does
/// not retry EINTR (``VideoDevice`` does, in one place) and it must not allocate on
/// the ioctl, poll and mmap paths, which run once per frame.
public protocol DeviceBackend: AnyObject, Sendable {
    /// A short name for messages: `kernel`, `libv4l2`, `simulator`.
    var name: String { get }
    /// open(2). Returns a file descriptor.
    func open(path: String, flags: Int32) -> Result<Int32, Errno>
    /// close(2).
    func close(_ descriptor: Int32) -> Errno?
    /// ioctl(2) with a pointer argument. Returns nil on success, or the errno.
    func ioctl(_ descriptor: Int32, request: UInt, argument: UnsafeMutableRawPointer) -> Errno?
    /// mmap(2) of `length` bytes at `offset` of the descriptor, shared, with the given protection.
    func mmap(_ descriptor: Int32, length: Int, protection: Int32, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno>
    /// munmap(2).
    func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Errno?
    /// poll(2) on one descriptor. Returns the revents (0 on timeout).
    func poll(_ descriptor: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno>
    /// poll(2) on a device descriptor and a wake-up eventfd. Returns the device's revents and
    /// whether the eventfd is readable. The default polls both real descriptors.
    func poll(_ descriptor: Int32, events: Int16, wakeup: Int32, timeoutMilliseconds: Int32) -> Result<(revents: Int16, woken: Bool), Errno>
    /// poll(2) on several descriptors: device nodes of this backend and real descriptors (an
    /// eventfd). Fills each entry's revents; returns how many are ready (0 on timeout). The
    /// default is one poll(2) of them all.
    func poll(_ entries: UnsafeMutableBufferPointer<pollfd>, timeoutMilliseconds: Int32) -> Result<Int32, Errno>
}

extension DeviceBackend {
    public func poll(_ entries: UnsafeMutableBufferPointer<pollfd>, timeoutMilliseconds: Int32) -> Result<Int32, Errno> {
        let result = Glibc.poll(entries.baseAddress, nfds_t(entries.count), timeoutMilliseconds)
        return result >= 0 ? .success(result) : .failure(.current)
    }

    public func poll(_ descriptor: Int32, events: Int16, wakeup: Int32, timeoutMilliseconds: Int32) -> Result<(revents: Int16, woken: Bool), Errno> {
        var entries = (pollfd(fd: descriptor, events: events, revents: 0), pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0))
        let result = withUnsafeMutableBytes(of: &entries) { raw in
            Glibc.poll(raw.baseAddress!.assumingMemoryBound(to: pollfd.self), 2, timeoutMilliseconds)
        }
        guard result >= 0 else { return .failure(.current) }
        return .success((entries.0.revents, entries.1.revents & Int16(POLLIN) != 0))
    }
}

/// A monotonic clock in nanoseconds (CLOCK_MONOTONIC), for deadlines.
public enum MonotonicClock {
    @inlinable public static func nanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}

/// Raw kernel system calls.
public final class KernelBackend: DeviceBackend {
    public static let shared = KernelBackend()
    public init() {}
    public var name: String { "kernel" }

    public func open(path: String, flags: Int32) -> Result<Int32, Errno> {
        let fd = cv4l2_open(path, flags)
        return fd >= 0 ? .success(fd) : .failure(.current)
    }

    public func close(_ descriptor: Int32) -> Errno? {
        do {
            try FileDescriptor(rawValue: descriptor).close()
            return nil
        } catch {
            return error as? Errno ?? .current
        }
    }

    public func ioctl(_ descriptor: Int32, request: UInt, argument: UnsafeMutableRawPointer) -> Errno? {
        cv4l2_ioctl(descriptor, request, argument) == 0 ? nil : .current
    }

    public func mmap(_ descriptor: Int32, length: Int, protection: Int32, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno> {
        let address = Glibc.mmap(nil, length, protection, MAP_SHARED, descriptor, off_t(offset))
        guard let address, address != cv4l2_map_failed() else { return .failure(.current) }
        return .success(address)
    }

    public func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Errno? {
        Glibc.munmap(address, length) == 0 ? nil : .current
    }

    public func poll(_ descriptor: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
        var entry = pollfd(fd: descriptor, events: events, revents: 0)
        let result = Glibc.poll(&entry, 1, timeoutMilliseconds)
        return result >= 0 ? .success(result == 0 ? 0 : entry.revents) : .failure(.current)
    }
}

/// The same calls through libv4l2, which converts formats in user space for devices
/// whose native formats applications do not understand.
public final class LibV4L2Backend: DeviceBackend {
    public static let shared = LibV4L2Backend()
    public init() {}
    public var name: String { "libv4l2" }

    public func open(path: String, flags: Int32) -> Result<Int32, Errno> {
        let fd = cv4l2_libv4l2_open(path, flags)
        return fd >= 0 ? .success(fd) : .failure(.current)
    }

    public func close(_ descriptor: Int32) -> Errno? {
        v4l2_close(descriptor) == 0 ? nil : .current
    }

    public func ioctl(_ descriptor: Int32, request: UInt, argument: UnsafeMutableRawPointer) -> Errno? {
        cv4l2_libv4l2_ioctl(descriptor, request, argument) == 0 ? nil : .current
    }

    public func mmap(_ descriptor: Int32, length: Int, protection: Int32, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno> {
        let address = v4l2_mmap(nil, length, protection, MAP_SHARED, descriptor, offset)
        guard let address, address != cv4l2_map_failed() else { return .failure(.current) }
        return .success(address)
    }

    public func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Errno? {
        v4l2_munmap(address, length) == 0 ? nil : .current
    }

    public func poll(_ descriptor: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
        var entry = pollfd(fd: descriptor, events: events, revents: 0)
        let result = Glibc.poll(&entry, 1, timeoutMilliseconds)
        return result >= 0 ? .success(result == 0 ? 0 : entry.revents) : .failure(.current)
    }
}
