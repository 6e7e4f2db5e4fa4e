import CV4L2
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

// Live sources: HDMI and analog inputs whose format comes from what is plugged in. Events
// (VIDIOC_SUBSCRIBE_EVENT / DQEVENT, signalled by POLLPRI), DV timings for digital video,
// analog standards, and the input status bits of VIDIOC_ENUMINPUT.

/// The status bits of an input (`v4l2_input.status`): what the receiver sees now.
public struct InputStatus: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let noPower = InputStatus(rawValue: 0x0000_0001)
    public static let noSignal = InputStatus(rawValue: 0x0000_0002)
    public static let noColor = InputStatus(rawValue: 0x0000_0004)
    public static let horizontalFlip = InputStatus(rawValue: 0x0000_0010)
    public static let verticalFlip = InputStatus(rawValue: 0x0000_0020)
    public static let noHorizontalLock = InputStatus(rawValue: 0x0000_0100)
    public static let colorKill = InputStatus(rawValue: 0x0000_0200)
    public static let noVerticalLock = InputStatus(rawValue: 0x0000_0400)
    public static let noStandardLock = InputStatus(rawValue: 0x0000_0800)
    public static let noSync = InputStatus(rawValue: 0x0001_0000)
    public static let noEqualizer = InputStatus(rawValue: 0x0002_0000)
    public static let noCarrier = InputStatus(rawValue: 0x0004_0000)
    public static let macrovision = InputStatus(rawValue: 0x0100_0000)
    public static let noAccess = InputStatus(rawValue: 0x0200_0000)
    public static let videoRecorder = InputStatus(rawValue: 0x0400_0000)

    private static let named: [(InputStatus, String)] = [
        (.noPower, "no power"), (.noSignal, "no signal"), (.noColor, "no color"), (.horizontalFlip, "h-flip"),
        (.verticalFlip, "v-flip"), (.noHorizontalLock, "no h-lock"), (.colorKill, "color kill"),
        (.noVerticalLock, "no v-lock"), (.noStandardLock, "no standard lock"), (.noSync, "no sync"),
        (.noEqualizer, "no equalizer"), (.noCarrier, "no carrier"), (.macrovision, "macrovision"),
        (.noAccess, "no access"), (.videoRecorder, "VTR"),
    ]

    /// The set bits by name, as v4l2-ctl prints them ("no signal"); empty when the input is fine.
    public var names: [String] {
        var names = Self.named.filter { contains($0.0) }.map(\.1)
        let known = Self.named.reduce(into: InputStatus()) { $0.formUnion($1.0) }
        if !subtracting(known).isEmpty { names.append("0x" + String(subtracting(known).rawValue, radix: 16)) }
        return names
    }
}

/// What an input can do (`v4l2_input.capabilities`).
public struct InputCapabilities: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The input takes DV timings (HDMI, DVI, DisplayPort).
    public static let dvTimings = InputCapabilities(rawValue: 0x2)
    /// The input takes analog video standards (PAL, NTSC, SECAM).
    public static let standards = InputCapabilities(rawValue: 0x4)
    public static let nativeSize = InputCapabilities(rawValue: 0x8)
}

extension VideoInput {
    public var statusFlags: InputStatus { InputStatus(rawValue: status) }
    public var capabilityFlags: InputCapabilities { InputCapabilities(rawValue: capabilities) }
}

/// Digital video timings (`struct v4l2_dv_timings`, BT.656/1120 type): the picture size, scan,
/// pixel clock and blanking of an HDMI source or preset.
public struct DVTimings: Hashable, Sendable, Codable, CustomStringConvertible {
    public var width: UInt32
    public var height: UInt32
    public var interlaced: Bool
    public var polarities: UInt32
    public var pixelClock: UInt64
    public var horizontalFrontPorch: UInt32
    public var horizontalSync: UInt32
    public var horizontalBackPorch: UInt32
    public var verticalFrontPorch: UInt32
    public var verticalSync: UInt32
    public var verticalBackPorch: UInt32
    public var interlacedVerticalFrontPorch: UInt32
    public var interlacedVerticalSync: UInt32
    public var interlacedVerticalBackPorch: UInt32
    public var standards: UInt32
    public var flags: UInt32
    /// The picture aspect ratio, when `flags` has V4L2_DV_FL_HAS_PICTURE_ASPECT.
    public var pictureAspect: Fraction
    /// The CEA-861 and HDMI video identification codes, when `flags` says they are set.
    public var cea861VIC: UInt8
    public var hdmiVIC: UInt8

    init(_ timings: v4l2_dv_timings) {
        let bt = timings.bt
        width = bt.width
        height = bt.height
        interlaced = bt.interlaced != 0
        polarities = bt.polarities
        pixelClock = bt.pixelclock
        horizontalFrontPorch = bt.hfrontporch
        horizontalSync = bt.hsync
        horizontalBackPorch = bt.hbackporch
        verticalFrontPorch = bt.vfrontporch
        verticalSync = bt.vsync
        verticalBackPorch = bt.vbackporch
        interlacedVerticalFrontPorch = bt.il_vfrontporch
        interlacedVerticalSync = bt.il_vsync
        interlacedVerticalBackPorch = bt.il_vbackporch
        standards = bt.standards
        flags = bt.flags
        pictureAspect = Fraction(bt.picture_aspect.numerator, bt.picture_aspect.denominator)
        cea861VIC = bt.cea861_vic
        hdmiVIC = bt.hdmi_vic
    }

    var raw: v4l2_dv_timings {
        var timings = v4l2_dv_timings()
        timings.type = UInt32(V4L2_DV_BT_656_1120)
        timings.bt.width = width
        timings.bt.height = height
        timings.bt.interlaced = interlaced ? 1 : 0
        timings.bt.polarities = polarities
        timings.bt.pixelclock = pixelClock
        timings.bt.hfrontporch = horizontalFrontPorch
        timings.bt.hsync = horizontalSync
        timings.bt.hbackporch = horizontalBackPorch
        timings.bt.vfrontporch = verticalFrontPorch
        timings.bt.vsync = verticalSync
        timings.bt.vbackporch = verticalBackPorch
        timings.bt.il_vfrontporch = interlacedVerticalFrontPorch
        timings.bt.il_vsync = interlacedVerticalSync
        timings.bt.il_vbackporch = interlacedVerticalBackPorch
        timings.bt.standards = standards
        timings.bt.flags = flags
        timings.bt.picture_aspect = v4l2_fract(numerator: pictureAspect.numerator, denominator: pictureAspect.denominator)
        timings.bt.cea861_vic = cea861VIC
        timings.bt.hdmi_vic = hdmiVIC
        return timings
    }

    /// Total pixels per line and lines per frame, blanking included.
    public var totalWidth: UInt64 { UInt64(width) + UInt64(horizontalFrontPorch) + UInt64(horizontalSync) + UInt64(horizontalBackPorch) }
    public var totalHeight: UInt64 {
        var lines = UInt64(height) + UInt64(verticalFrontPorch) + UInt64(verticalSync) + UInt64(verticalBackPorch)
        if interlaced {
            lines += UInt64(interlacedVerticalFrontPorch) + UInt64(interlacedVerticalSync) + UInt64(interlacedVerticalBackPorch)
        }
        return lines
    }

    /// Frames per second: the pixel clock over the total frame (fields pair into frames).
    public var framesPerSecond: Double {
        let total = totalWidth * totalHeight
        return total == 0 ? 0 : Double(pixelClock) / Double(total)
    }

    /// As v4l2-ctl names presets: `1280x720p60`, `1920x1080i50` (field rate for interlaced).
    public var description: String {
        let rate = interlaced ? framesPerSecond * 2 : framesPerSecond
        let hundredths = Int((rate * 100).rounded())
        let text = hundredths % 100 == 0 ? String(hundredths / 100)
            : "\(hundredths / 100)." + String(String(hundredths % 100 + 100).dropFirst())
        return "\(width)x\(height)\(interlaced ? "i" : "p")\(text)"
    }
}

/// What a receiver's DV timings may be (VIDIOC_DV_TIMINGS_CAP).
public struct DVTimingsCapabilities: Hashable, Sendable, Codable {
    public var minimumWidth: UInt32
    public var maximumWidth: UInt32
    public var minimumHeight: UInt32
    public var maximumHeight: UInt32
    public var minimumPixelClock: UInt64
    public var maximumPixelClock: UInt64
    public var standards: UInt32
    public var capabilities: UInt32
}

/// An analog video standard (VIDIOC_ENUMSTD).
public struct VideoStandard: Hashable, Sendable, Codable {
    public var index: UInt32
    /// The `v4l2_std_id` bits this entry stands for.
    public var id: UInt64
    public var name: String
    /// Seconds per frame.
    public var framePeriod: Fraction
    public var frameLines: UInt32

    /// Frames per second.
    public var framesPerSecond: Double { framePeriod.numerator == 0 ? 0 : Double(framePeriod.denominator) / Double(framePeriod.numerator) }
}

/// Standard-id bits, for naming what QUERYSTD or G_STD answered.
public enum StandardID {
    public static let pal: UInt64 = 0x0000_00FF
    public static let ntsc: UInt64 = 0x0000_B000
    public static let secam: UInt64 = 0x00FF_0000
    /// 525-line standards (NTSC, PAL-M, PAL-60): bottom field first in interlaced frames.
    public static let lines525: UInt64 = 0x0000_B000 | 0x0000_0100 | 0x0000_0800
    /// A short name for a set of bits: `PAL`, `NTSC`, `SECAM`, or the hex value.
    public static func name(_ id: UInt64) -> String {
        if id == 0 { return "none" }
        var names: [String] = []
        if id & pal != 0 { names.append("PAL") }
        if id & ntsc != 0 { names.append("NTSC") }
        if id & secam != 0 { names.append("SECAM") }
        if id & 0x0000_0100 != 0 { names.append("PAL-M") }
        return names.isEmpty ? "0x" + String(id, radix: 16) : names.joined(separator: "/")
    }
}

/// The events a capture device sends (VIDIOC_SUBSCRIBE_EVENT types).
public enum EventType: UInt32, Sendable, Codable, CaseIterable {
    case verticalSync = 1
    case endOfStream = 2
    case controlChange = 3
    case frameSync = 4
    case sourceChange = 5
    case motionDetection = 6
}

/// What changed in a source change event (`v4l2_event_src_change.changes`).
public struct SourceChanges: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The resolution (or timings, or standard) changed, or the signal came or went.
    public static let resolution = SourceChanges(rawValue: 0x1)
}

/// A dequeued event (VIDIOC_DQEVENT).
public struct DeviceEvent: Hashable, Sendable {
    public var type: UInt32
    /// The event's id: the input index for a source change, the control id for a control change.
    public var id: UInt32
    public var sequence: UInt32
    /// More events waiting.
    public var pending: UInt32
    /// CLOCK_MONOTONIC nanoseconds.
    public var timestampNanoseconds: Int64
    /// For ``EventType/sourceChange``.
    public var sourceChanges: SourceChanges
    /// For ``EventType/frameSync``: the frame sequence.
    public var frameSequence: UInt32
    /// For ``EventType/controlChange``: the new value.
    public var controlValue: Int64

    public var kind: EventType? { EventType(rawValue: type) }
}

extension VideoDevice {
    // MARK: - Events

    /// VIDIOC_SUBSCRIBE_EVENT: the driver queues events of `type` (for `id`: the input for a
    /// source change, the control for a control change); POLLPRI says one is waiting.
    public func subscribe(_ type: EventType, id: UInt32 = 0, sendInitial: Bool = false) throws(V4L2Error) {
        var subscription = v4l2_event_subscription()
        subscription.type = type.rawValue
        subscription.id = id
        subscription.flags = sendInitial ? UInt32(V4L2_EVENT_SUB_FL_SEND_INITIAL) : 0
        if let errno = rawIoctl(CV4L2_VIDIOC_SUBSCRIBE_EVENT, &subscription) {
            throw error("VIDIOC_SUBSCRIBE_EVENT", errno, detail: "event type \(type) id \(id)")
        }
    }

    /// VIDIOC_UNSUBSCRIBE_EVENT.
    public func unsubscribe(_ type: EventType, id: UInt32 = 0) throws(V4L2Error) {
        var subscription = v4l2_event_subscription()
        subscription.type = type.rawValue
        subscription.id = id
        try perform("VIDIOC_UNSUBSCRIBE_EVENT", CV4L2_VIDIOC_UNSUBSCRIBE_EVENT, &subscription)
    }

    /// VIDIOC_DQEVENT: the next event, or nil when none is waiting (ENOENT).
    public func dequeueEvent() throws(V4L2Error) -> DeviceEvent? {
        var event = v4l2_event()
        if let errno = rawIoctl(CV4L2_VIDIOC_DQEVENT, &event) {
            if errno == .noSuchFileOrDirectory { return nil }
            throw error("VIDIOC_DQEVENT", errno)
        }
        let timestamp = Int64(event.timestamp.tv_sec) * 1_000_000_000 + Int64(event.timestamp.tv_nsec)
        var changes = SourceChanges()
        var frameSequence: UInt32 = 0
        var controlValue: Int64 = 0
        switch event.type {
        case UInt32(V4L2_EVENT_SOURCE_CHANGE): changes = SourceChanges(rawValue: event.u.src_change.changes)
        case UInt32(V4L2_EVENT_FRAME_SYNC): frameSequence = event.u.frame_sync.frame_sequence
        case UInt32(V4L2_EVENT_CTRL): controlValue = event.u.ctrl.value64
        default: break
        }
        return DeviceEvent(type: event.type, id: event.id, sequence: event.sequence, pending: event.pending,
                           timestampNanoseconds: timestamp, sourceChanges: changes, frameSequence: frameSequence,
                           controlValue: controlValue)
    }

    // MARK: - DV timings

    /// VIDIOC_QUERY_DV_TIMINGS: what the receiver detects now. Fails with ENOLINK when there is
    /// no signal, ENOLCK when it is not stable, ERANGE when it is out of range.
    public func queryDVTimings() throws(V4L2Error) -> DVTimings {
        var timings = v4l2_dv_timings()
        if let errno = rawIoctl(CV4L2_VIDIOC_QUERY_DV_TIMINGS, &timings) {
            let detail: String? = switch errno.rawValue {
            case ENOLINK: "no signal"
            case ENOLCK: "the signal is not stable (no lock)"
            case ERANGE: "the signal is out of the receiver's range"
            default: nil
            }
            throw error("VIDIOC_QUERY_DV_TIMINGS", errno, detail: detail)
        }
        return DVTimings(timings)
    }

    /// VIDIOC_G_DV_TIMINGS: the timings the receiver is set to.
    public func dvTimings() throws(V4L2Error) -> DVTimings {
        var timings = v4l2_dv_timings()
        try perform("VIDIOC_G_DV_TIMINGS", CV4L2_VIDIOC_G_DV_TIMINGS, &timings)
        return DVTimings(timings)
    }

    /// VIDIOC_S_DV_TIMINGS; returns the timings the driver set. EBUSY while streaming.
    @discardableResult
    public func setDVTimings(_ timings: DVTimings) throws(V4L2Error) -> DVTimings {
        var raw = timings.raw
        try perform("VIDIOC_S_DV_TIMINGS", CV4L2_VIDIOC_S_DV_TIMINGS, &raw)
        return DVTimings(raw)
    }

    /// VIDIOC_ENUM_DV_TIMINGS over all indexes: the presets the receiver supports.
    public func dvTimingsPresets() throws(V4L2Error) -> [DVTimings] {
        var result: [DVTimings] = []
        for index in UInt32(0)...UInt32(VideoDevice.enumerationLimit) {
            var entry = v4l2_enum_dv_timings()
            entry.index = index
            if let errno = rawIoctl(CV4L2_VIDIOC_ENUM_DV_TIMINGS, &entry) {
                if errno == .invalidArgument { break }
                throw error("VIDIOC_ENUM_DV_TIMINGS", errno)
            }
            if index == VideoDevice.enumerationLimit { throw endlessEnumeration("VIDIOC_ENUM_DV_TIMINGS") }
            result.append(DVTimings(entry.timings))
        }
        return result
    }

    /// VIDIOC_DV_TIMINGS_CAP.
    public func dvTimingsCapabilities() throws(V4L2Error) -> DVTimingsCapabilities {
        var capabilities = v4l2_dv_timings_cap()
        capabilities.type = UInt32(V4L2_DV_BT_656_1120)
        try perform("VIDIOC_DV_TIMINGS_CAP", CV4L2_VIDIOC_DV_TIMINGS_CAP, &capabilities)
        let bt = capabilities.bt
        return DVTimingsCapabilities(minimumWidth: bt.min_width, maximumWidth: bt.max_width, minimumHeight: bt.min_height,
                                     maximumHeight: bt.max_height, minimumPixelClock: bt.min_pixelclock,
                                     maximumPixelClock: bt.max_pixelclock, standards: bt.standards, capabilities: bt.capabilities)
    }

    // MARK: - Analog standards

    /// VIDIOC_QUERYSTD: the standards the receiver detects (0 with no signal).
    public func queryStandard() throws(V4L2Error) -> UInt64 {
        var id: v4l2_std_id = 0
        try perform("VIDIOC_QUERYSTD", CV4L2_VIDIOC_QUERYSTD, &id)
        return id
    }

    /// VIDIOC_G_STD.
    public func standard() throws(V4L2Error) -> UInt64 {
        var id: v4l2_std_id = 0
        try perform("VIDIOC_G_STD", CV4L2_VIDIOC_G_STD, &id)
        return id
    }

    /// VIDIOC_S_STD. EBUSY while streaming.
    public func setStandard(_ id: UInt64) throws(V4L2Error) {
        var value: v4l2_std_id = id
        try perform("VIDIOC_S_STD", CV4L2_VIDIOC_S_STD, &value)
    }

    /// VIDIOC_ENUMSTD over all indexes.
    public func standards() throws(V4L2Error) -> [VideoStandard] {
        var result: [VideoStandard] = []
        for index in UInt32(0)...UInt32(VideoDevice.enumerationLimit) {
            var entry = v4l2_standard()
            entry.index = index
            if let errno = rawIoctl(CV4L2_VIDIOC_ENUMSTD, &entry) {
                if errno == .invalidArgument || errno == .noData || (errno == .inappropriateIOCTLForDevice && index == 0) { break }
                throw error("VIDIOC_ENUMSTD", errno)
            }
            if index == VideoDevice.enumerationLimit { throw endlessEnumeration("VIDIOC_ENUMSTD") }
            result.append(VideoStandard(index: entry.index, id: entry.id, name: VideoDevice.string(from: entry.name),
                                        framePeriod: Fraction(entry.frameperiod.numerator, entry.frameperiod.denominator),
                                        frameLines: entry.framelines))
        }
        return result
    }
}
