import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// swift-system's `Errno` is the errno type of every layer; this extension adds what messages
// need: the symbolic name (`EBUSY`) beside the C library's text.
extension Errno {
    /// ENODEV, in V4L2's sense: the device went away (swift-system calls it
    /// `operationNotSupportedByDevice`).
    public static var noSuchDevice: Errno { .operationNotSupportedByDevice }

    /// The symbolic name, for example `EBUSY`.
    public var name: String {
        switch rawValue {
        case Glibc.EPERM: return "EPERM"
        case Glibc.ENOENT: return "ENOENT"
        case Glibc.EINTR: return "EINTR"
        case Glibc.EIO: return "EIO"
        case Glibc.ENXIO: return "ENXIO"
        case Glibc.EBADF: return "EBADF"
        case Glibc.EAGAIN: return "EAGAIN"
        case Glibc.ENOMEM: return "ENOMEM"
        case Glibc.EACCES: return "EACCES"
        case Glibc.EFAULT: return "EFAULT"
        case Glibc.EBUSY: return "EBUSY"
        case Glibc.ENODEV: return "ENODEV"
        case Glibc.EINVAL: return "EINVAL"
        case Glibc.ENOTTY: return "ENOTTY"
        case Glibc.ENOSPC: return "ENOSPC"
        case Glibc.EPIPE: return "EPIPE"
        case Glibc.EOPNOTSUPP: return "EOPNOTSUPP"
        case Glibc.ETIMEDOUT: return "ETIMEDOUT"
        case Glibc.EISDIR: return "EISDIR"
        case Glibc.EROFS: return "EROFS"
        case Glibc.ENOTDIR: return "ENOTDIR"
        case Glibc.EEXIST: return "EEXIST"
        case Glibc.EMFILE: return "EMFILE"
        case Glibc.ERANGE: return "ERANGE"
        case Glibc.EPROTO: return "EPROTO"
        case Glibc.ENOSYS: return "ENOSYS"
        case Glibc.EDQUOT: return "EDQUOT"
        case Glibc.EFBIG: return "EFBIG"
        case Glibc.ENOLINK: return "ENOLINK"
        case Glibc.ENODATA: return "ENODATA"
        default: return "errno \(rawValue)"
        }
    }

    /// The C library's text for it, as strerror(3) gives.
    public var message: String { String(cString: strerror(rawValue)) }

    /// The calling thread's errno now (swift-system keeps its own `current` internal).
    public static var current: Errno { Errno(rawValue: Glibc.errno) }

    /// The name and the text: `EBUSY (Device or resource busy)`.
    public var symbolicDescription: String { "\(name) (\(message))" }
}

extension DefaultStringInterpolation {
    /// `"\(errno)"` in a message gives ``Errno/symbolicDescription``, `EBUSY (Device or resource
    /// busy)`, rather than the C text alone: a message names the errno people search for.
    public mutating func appendInterpolation(_ errno: Errno) {
        appendLiteral(errno.symbolicDescription)
    }
}
