import SystemPackage
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// A backend that forwards every call to another and hands each ioctl's answer to `rewrite`,
/// after the wrapped backend returned (outside its locks): a driver that answers oddly, or a
/// test's hook at an exact point of the frame path.
public final class InterceptingBackend: DeviceBackend, @unchecked Sendable {
    /// Gets the request, its argument (as the wrapped backend left it) and the answer; returns
    /// the answer the caller sees.
    public typealias Rewrite = @Sendable (_ request: UInt, _ argument: UnsafeMutableRawPointer, _ answer: Errno?) -> Errno?

    public let wrapped: any DeviceBackend
    public let name: String
    private let rewrite: Rewrite

    public init(_ wrapped: any DeviceBackend, name: String, rewrite: @escaping Rewrite) {
        self.wrapped = wrapped
        self.name = name
        self.rewrite = rewrite
    }

    public func open(path: String, flags: Int32) -> Result<Int32, Errno> { wrapped.open(path: path, flags: flags) }
    public func close(_ descriptor: Int32) -> Errno? { wrapped.close(descriptor) }
    public func ioctl(_ descriptor: Int32, request: UInt, argument: UnsafeMutableRawPointer) -> Errno? {
        rewrite(request, argument, wrapped.ioctl(descriptor, request: request, argument: argument))
    }
    public func mmap(_ descriptor: Int32, length: Int, protection: Int32, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno> {
        wrapped.mmap(descriptor, length: length, protection: protection, offset: offset)
    }
    public func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Errno? { wrapped.munmap(address, length: length) }
    public func poll(_ descriptor: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
        wrapped.poll(descriptor, events: events, timeoutMilliseconds: timeoutMilliseconds)
    }
    public func poll(_ descriptor: Int32, events: Int16, wakeup: Int32, timeoutMilliseconds: Int32) -> Result<(revents: Int16, woken: Bool), Errno> {
        wrapped.poll(descriptor, events: events, wakeup: wakeup, timeoutMilliseconds: timeoutMilliseconds)
    }
    public func poll(_ entries: UnsafeMutableBufferPointer<pollfd>, timeoutMilliseconds: Int32) -> Result<Int32, Errno> {
        wrapped.poll(entries, timeoutMilliseconds: timeoutMilliseconds)
    }
}
