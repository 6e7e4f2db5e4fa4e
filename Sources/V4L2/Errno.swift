#if canImport(Glibc)
import Glibc
#endif

/// An errno value with its symbolic name, as a typed value (after swift-system's `Errno`).
public struct Errno: RawRepresentable, Error, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current errno.
    public static var current: Errno { Errno(Glibc.errno) }

    public static let permissionDenied = Errno(EPERM)
    public static let noSuchFileOrDirectory = Errno(ENOENT)
    public static let interrupted = Errno(EINTR)
    public static let ioError = Errno(EIO)
    public static let noSuchDeviceOrAddress = Errno(ENXIO)
    public static let badFileDescriptor = Errno(EBADF)
    public static let resourceTemporarilyUnavailable = Errno(EAGAIN)
    public static let outOfMemory = Errno(ENOMEM)
    public static let accessDenied = Errno(EACCES)
    public static let badAddress = Errno(EFAULT)
    public static let deviceBusy = Errno(EBUSY)
    public static let noSuchDevice = Errno(ENODEV)
    public static let invalidArgument = Errno(EINVAL)
    public static let notTypewriter = Errno(ENOTTY)
    public static let noSpace = Errno(ENOSPC)
    public static let brokenPipe = Errno(EPIPE)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let timedOut = Errno(ETIMEDOUT)
    public static let isDirectory = Errno(EISDIR)
    public static let readOnlyFileSystem = Errno(EROFS)

    /// The symbolic name, for example `EBUSY`.
    public var name: String {
        switch rawValue {
        case EPERM: return "EPERM"
        case ENOENT: return "ENOENT"
        case EINTR: return "EINTR"
        case EIO: return "EIO"
        case ENXIO: return "ENXIO"
        case EBADF: return "EBADF"
        case EAGAIN: return "EAGAIN"
        case ENOMEM: return "ENOMEM"
        case EACCES: return "EACCES"
        case EFAULT: return "EFAULT"
        case EBUSY: return "EBUSY"
        case ENODEV: return "ENODEV"
        case EINVAL: return "EINVAL"
        case ENOTTY: return "ENOTTY"
        case ENOSPC: return "ENOSPC"
        case EPIPE: return "EPIPE"
        case EOPNOTSUPP: return "EOPNOTSUPP"
        case ETIMEDOUT: return "ETIMEDOUT"
        case EISDIR: return "EISDIR"
        case EROFS: return "EROFS"
        case ENOTDIR: return "ENOTDIR"
        case EEXIST: return "EEXIST"
        case EMFILE: return "EMFILE"
        case ERANGE: return "ERANGE"
        case EPROTO: return "EPROTO"
        case ENOSYS: return "ENOSYS"
        case EDQUOT: return "EDQUOT"
        case EFBIG: return "EFBIG"
        default: return "errno \(rawValue)"
        }
    }

    /// The C library's text for it, as strerror(3) gives.
    public var message: String { String(cString: strerror(rawValue)) }

    public var description: String { "\(name) (\(message))" }
}
