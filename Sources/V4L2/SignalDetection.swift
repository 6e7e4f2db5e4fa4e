import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Whether an input has a usable signal, in the drivers' words: the one classification that
/// the pin's source-change follower and framedump's wait for a signal share.
///
/// A DV input (HDMI) says it with VIDIOC_QUERY_DV_TIMINGS's errno: ENOLINK (no signal),
/// ENOLCK (a signal that is not stable) or ERANGE (out of the receiver's range). Any input
/// says it with the V4L2_IN_ST_NO_SIGNAL bit of VIDIOC_ENUMINPUT's status. An analog input's
/// VIDIOC_QUERYSTD detecting no standard (0) is the third way.
public enum SignalDetection {
    /// The errnos with which VIDIOC_QUERY_DV_TIMINGS says the input has no usable signal.
    public static let noSignalErrnos: Set<Errno> = [Errno(rawValue: ENOLINK), Errno(rawValue: ENOLCK), Errno(rawValue: ERANGE)]

    /// Whether `error`, a failed VIDIOC_QUERY_DV_TIMINGS, means the input has no usable
    /// signal (rather than a failure of the device or the call).
    public static func isSignalLoss(_ error: V4L2Error) -> Bool {
        guard error.operation == "VIDIOC_QUERY_DV_TIMINGS", let errno = error.errno else { return false }
        return noSignalErrnos.contains(errno)
    }

    /// Whether an input's status bits (VIDIOC_ENUMINPUT) say it has no signal.
    public static func isSignalLoss(status: InputStatus) -> Bool {
        status.contains(.noSignal)
    }

    /// Whether a standard detected by VIDIOC_QUERYSTD means no signal (none detected).
    public static func isSignalLoss(detectedStandard: UInt64) -> Bool {
        detectedStandard == 0
    }
}
