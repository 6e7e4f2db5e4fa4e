import SystemPackage
import V4L2

/// A one-shot misbehaviour of a simulated device, for testing how callers cope with a
/// broken driver. Faults wait in a per-device queue (``SimulatedV4L2Backend/injectFault(_:path:)``);
/// each call takes the first pending fault that applies to it.
///
/// - Result faults apply to the next successful VIDIOC_DQBUF: the buffer really is
///   dequeued inside the simulator, only the answer is wrong, so the simulator's own
///   state stays consistent.
/// - Frame faults apply to the next frame the device fills.
/// - Call faults apply to the next calls, as noted.
public enum SimulatedFault: Sendable, Hashable, CustomStringConvertible {
    /// Result: DQBUF reports an index one past the last buffer.
    case outOfRangeIndex
    /// Result: DQBUF reports an index that is not queued: the one the previous DQBUF
    /// returned (the same index twice), or another buffer the application holds. It waits
    /// for the first DQBUF at which the application holds some other buffer.
    case indexNotQueued
    /// Result: plane 0's `bytesused` is one more than its `length`.
    case bytesUsedOverLength
    /// Result: plane 0's `data_offset` equals its `bytesused` (multi-planar devices only;
    /// it stays pending on a single-planar one, which has no `data_offset`).
    case dataOffsetNotBelowBytesUsed
    /// Result: plane 0's `bytesused` is 0.
    case bytesUsedZero
    /// Frame (MJPEG): the next frame is cut to half its size, so it has no EOI marker.
    case truncatedJPEG
    /// Frame (MJPEG): the next frame's first two bytes (the SOI marker) are zeroed.
    case missingSOI
    /// Frame (MJPEG): the next frame is an SOI, zeros and an EOI: sound markers, nothing decodable.
    case undecodableJPEG
    /// Frame (MJPEG): the next frame is encoded with TurboJPEG subsampling `subsampling`
    /// (e.g. 1 = 4:2:2) instead of the configured one.
    case jpegSubsampling(Int32)
    /// Frame: the next frame is returned with V4L2_BUF_FLAG_ERROR.
    case errorFlag
    /// Frame: the next frame's sequence number skips `count` numbers, as when the driver drops frames.
    case dropFrames(Int)
    /// Call: the next `count` ioctl and poll calls on the device fail with EINTR.
    case interrupted(Int)
    /// Call: the next `count` VIDIOC_DQBUF calls fail with EAGAIN even though a frame could be produced.
    case wouldBlock(Int)
    /// Call: at the next QBUF, DQBUF or poll the queue enters videobuf2's error state:
    /// QBUF and DQBUF fail with EIO and poll reports POLLERR until STREAMOFF (or REQBUFS).
    case fatalError
    /// Call: at the next ioctl, poll or mmap the device goes away: every later ioctl and mmap
    /// fails with ENODEV, poll reports POLLERR | POLLHUP, and opening the path fails with ENODEV.
    case disconnect
    /// Call: the next ioctl with `request` fails with `errno` (and has no effect).
    case failNext(request: UInt, errno: Errno)
    /// Call: the ioctl with `request` succeeds `successes` more times, then fails once with
    /// `errno` (and has no effect), e.g. the second VIDIOC_EXPBUF of a two-plane buffer.
    case failAfter(request: UInt, successes: Int, errno: Errno)
    /// Call: from the next ioctl with `request` on, that enumeration (VIDIOC_ENUMINPUT,
    /// VIDIOC_ENUM_FMT, VIDIOC_ENUM_FRAMESIZES, VIDIOC_ENUM_FRAMEINTERVALS) never ends: an
    /// index past the last entry answers the first entry again instead of EINVAL, as a broken
    /// driver might. The effect stays, as a disconnect's does.
    case endlessEnumeration(request: UInt)
    /// Result: plane 0's `bytesused` is `bytes` less than the frame (as vivid's YU12 at
    /// 642x362 fills 348244 bytes of a 348606-byte sizeimage).
    case shortPayload(bytes: UInt32)

    public var description: String {
        switch self {
        case .outOfRangeIndex: return "outOfRangeIndex"
        case .indexNotQueued: return "indexNotQueued"
        case .bytesUsedOverLength: return "bytesUsedOverLength"
        case .shortPayload(let bytes): return "shortPayload(\(bytes))"
        case .dataOffsetNotBelowBytesUsed: return "dataOffsetNotBelowBytesUsed"
        case .bytesUsedZero: return "bytesUsedZero"
        case .truncatedJPEG: return "truncatedJPEG"
        case .missingSOI: return "missingSOI"
        case .undecodableJPEG: return "undecodableJPEG"
        case .jpegSubsampling(let value): return "jpegSubsampling(\(value))"
        case .errorFlag: return "errorFlag"
        case .dropFrames(let count): return "dropFrames(\(count))"
        case .interrupted(let count): return "interrupted(\(count))"
        case .wouldBlock(let count): return "wouldBlock(\(count))"
        case .fatalError: return "fatalError"
        case .disconnect: return "disconnect"
        case .failNext(let request, let errno): return "failNext(\(ioctlName(request)), \(errno.name))"
        case .failAfter(let request, let successes, let errno):
            return "failAfter(\(ioctlName(request)), \(successes), \(errno.name))"
        case .endlessEnumeration(let request): return "endlessEnumeration(\(ioctlName(request)))"
        }
    }
}
