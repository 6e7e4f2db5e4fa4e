import SystemPackage
import CV4L2
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// One event subscription of a file handle. Source-change subscriptions have one element
/// (v4l2_src_change_event_subscribe): a newer event replaces a pending one and its changes
/// are merged in (v4l2_event_src_replace), so at most one is pending per subscription.
struct SimulatedSubscription {
    let type: UInt32
    let id: UInt32
    var pending = false
    var changes: UInt32 = 0
    var sequence: UInt32 = 0
    var timestampNanoseconds: Int64 = 0
}

/// The events of one file handle (a `v4l2_fh`): created at its first subscription, dropped at close.
struct SimulatedEventQueue {
    let fd: Int32
    var subscriptions: [SimulatedSubscription] = []
    /// `v4l2_fh.sequence`: each event queued to the handle takes the next number, from 0.
    var nextSequence: UInt32 = 0
}

extension SimulatedDevice {
    /// "HDMI 3", the input that is live when ``SimulatedDeviceConfiguration/hdmiSource`` is set.
    static let hdmiInput: UInt32 = 3
    static let sourceChangeEvent = UInt32(V4L2_EVENT_SOURCE_CHANGE)
    static let resolutionChange = UInt32(V4L2_EVENT_SRC_CH_RESOLUTION)

    var hasLiveHDMI: Bool { configuration.hdmiSource != nil }
    /// The live HDMI input is the selected one: DV timings apply, and the format has their size.
    var isLiveHDMI: Bool { hasLiveHDMI && input == SimulatedDevice.hdmiInput }

    // MARK: - SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT, DQEVENT

    func subscribeEvent(_ fd: Int32, _ subscription: UnsafeMutablePointer<v4l2_event_subscription>) -> Errno? {
        // vivid takes source changes on a capture node; the rest goes to v4l2_ctrl_subscribe_event,
        // whose control events are not simulated.
        let (type, id) = (subscription.pointee.type, subscription.pointee.id)
        guard isCapture, type == SimulatedDevice.sourceChangeEvent else { return .invalidArgument }
        let q = eventQueueIndex(of: fd) ?? {
            eventQueues.append(SimulatedEventQueue(fd: fd))
            return eventQueues.count - 1
        }()
        // Subscribing again to the same (type, id) is a no-op, as in v4l2_event_subscribe.
        if !eventQueues[q].subscriptions.contains(where: { $0.type == type && $0.id == id }) {
            eventQueues[q].subscriptions.append(SimulatedSubscription(type: type, id: id))
        }
        return nil
    }

    func unsubscribeEvent(_ fd: Int32, _ subscription: UnsafeMutablePointer<v4l2_event_subscription>) -> Errno? {
        guard let q = eventQueueIndex(of: fd) else { return nil }
        let (type, id) = (subscription.pointee.type, subscription.pointee.id)
        if type == UInt32(V4L2_EVENT_ALL) {
            eventQueues[q].subscriptions.removeAll()
        } else {
            eventQueues[q].subscriptions.removeAll { $0.type == type && $0.id == id }
        }
        return nil
    }

    /// The oldest pending event of handle `fd`; ENOENT when none (every handle is non-blocking).
    func dequeueEvent(_ fd: Int32, _ event: UnsafeMutablePointer<v4l2_event>) -> Errno? {
        guard let q = eventQueueIndex(of: fd) else { return .noSuchFileOrDirectory }
        var oldest = -1
        var pendingCount = 0
        for i in eventQueues[q].subscriptions.indices where eventQueues[q].subscriptions[i].pending {
            pendingCount += 1
            if oldest < 0 || eventQueues[q].subscriptions[i].sequence < eventQueues[q].subscriptions[oldest].sequence {
                oldest = i
            }
        }
        guard oldest >= 0 else { return .noSuchFileOrDirectory }
        eventQueues[q].subscriptions[oldest].pending = false
        let taken = eventQueues[q].subscriptions[oldest]
        SystemCalls.zero(event)
        event.pointee.type = taken.type
        event.pointee.id = taken.id
        event.pointee.u.src_change.changes = taken.changes
        event.pointee.pending = UInt32(pendingCount - 1)
        event.pointee.sequence = taken.sequence
        event.pointee.timestamp.tv_sec = Int(taken.timestampNanoseconds / 1_000_000_000)
        event.pointee.timestamp.tv_nsec = Int(taken.timestampNanoseconds % 1_000_000_000)
        return nil
    }

    /// v4l2_event_queue of a source change of `input`: to every handle subscribed to it.
    func queueSourceChange(input: UInt32, changes: UInt32) {
        let now = SystemCalls.monotonicNanoseconds()
        for q in eventQueues.indices {
            for s in eventQueues[q].subscriptions.indices
            where eventQueues[q].subscriptions[s].type == SimulatedDevice.sourceChangeEvent && eventQueues[q].subscriptions[s].id == input {
                let merged = eventQueues[q].subscriptions[s].pending ? eventQueues[q].subscriptions[s].changes : 0
                eventQueues[q].subscriptions[s].changes = merged | changes
                eventQueues[q].subscriptions[s].sequence = eventQueues[q].nextSequence
                eventQueues[q].subscriptions[s].timestampNanoseconds = now
                eventQueues[q].subscriptions[s].pending = true
                eventQueues[q].nextSequence &+= 1
            }
        }
    }

    /// v4l2_event_pending for handle `fd`. On the poll path: indexes, not for-in, which
    /// allocated in debug builds (three mallocs a poll).
    @inline(__always)
    func hasPendingEvent(_ fd: Int32) -> Bool {
        var q = 0
        while q < eventQueues.count {
            if eventQueues[q].fd == fd {
                var s = 0
                while s < eventQueues[q].subscriptions.count {
                    if eventQueues[q].subscriptions[s].pending { return true }
                    s += 1
                }
            }
            q += 1
        }
        return false
    }

    /// The handle is closed: its subscriptions and events go (v4l2_event_unsubscribe_all).
    func dropEventQueue(of fd: Int32) {
        eventQueues.removeAll { $0.fd == fd }
    }

    private func eventQueueIndex(of fd: Int32) -> Int? {
        eventQueues.firstIndex { $0.fd == fd }
    }

    // MARK: - QUERY_DV_TIMINGS, G_DV_TIMINGS, S_DV_TIMINGS

    /// What the source sends: ENODATA off the HDMI input (as vivid), ENOLINK without a signal.
    func queryDVTimings(_ timings: UnsafeMutablePointer<v4l2_dv_timings>) -> Errno? {
        guard isLiveHDMI else { return Errno(rawValue: ENODATA) }
        guard hasSignal else { return Errno(rawValue: ENOLINK) }
        timings.pointee = SimulatedDVTimings.timings(sourceSize)
        return nil
    }

    func getDVTimings(_ timings: UnsafeMutablePointer<v4l2_dv_timings>) -> Errno? {
        guard isLiveHDMI else { return Errno(rawValue: ENODATA) }
        timings.pointee = SimulatedDVTimings.timings(dvTimingsSize)
        return nil
    }

    /// vivid's vidioc_s_dv_timings: the same timings are accepted even while busy; others are
    /// EBUSY while buffers are allocated (vb2_is_busy), else set, and the format takes their size.
    func setDVTimings(_ timings: UnsafeMutablePointer<v4l2_dv_timings>) -> Errno? {
        guard isLiveHDMI else { return Errno(rawValue: ENODATA) }
        guard let size = SimulatedDVTimings.size(of: timings.pointee) else { return .invalidArgument }
        if size != dvTimingsSize {
            if !buffers.isEmpty { return .resourceBusy }
            dvTimingsSize = size
            format = negotiate(fourcc: format.pixelFormat.fourcc.rawValue, width: size.width, height: size.height)
        }
        timings.pointee = SimulatedDVTimings.timings(dvTimingsSize)
        return nil
    }
}

/// The BT.656/1120 timings the simulated HDMI source sends and its receiver accepts:
/// progressive, 60 frames a second (59.94 for 640x480).
enum SimulatedDVTimings {
    static let minimumSize = SimulatedFrameSize(width: 16, height: 16)
    static let maximumSize = SimulatedFrameSize(width: 4096, height: 2160)

    private struct Preset {
        let width: UInt32, height: UInt32, pixelClock: UInt64
        let hfp: UInt32, hsync: UInt32, hbp: UInt32, vfp: UInt32, vsync: UInt32, vbp: UInt32
        let polarities: UInt32, standards: UInt32, vic: UInt8
    }

    /// CEA-861 formats 1, 4 and 16 (the kernel's V4L2_DV_BT_CEA_* of <linux/v4l2-dv-timings.h>).
    private static let presets: [Preset] = [
        Preset(width: 640, height: 480, pixelClock: 25_175_000, hfp: 16, hsync: 96, hbp: 48, vfp: 10, vsync: 2, vbp: 33,
               polarities: 0, standards: UInt32(V4L2_DV_BT_STD_DMT | V4L2_DV_BT_STD_CEA861), vic: 1),
        Preset(width: 1280, height: 720, pixelClock: 74_250_000, hfp: 110, hsync: 40, hbp: 220, vfp: 5, vsync: 5, vbp: 20,
               polarities: UInt32(V4L2_DV_HSYNC_POS_POL | V4L2_DV_VSYNC_POS_POL), standards: UInt32(V4L2_DV_BT_STD_CEA861), vic: 4),
        Preset(width: 1920, height: 1080, pixelClock: 148_500_000, hfp: 88, hsync: 44, hbp: 148, vfp: 4, vsync: 5, vbp: 36,
               polarities: UInt32(V4L2_DV_HSYNC_POS_POL | V4L2_DV_VSYNC_POS_POL), standards: UInt32(V4L2_DV_BT_STD_CEA861), vic: 16),
    ]

    static func timings(_ size: SimulatedFrameSize) -> v4l2_dv_timings {
        var timings = v4l2_dv_timings()
        timings.type = UInt32(V4L2_DV_BT_656_1120)
        timings.bt.width = size.width
        timings.bt.height = size.height
        timings.bt.interlaced = 0
        if let preset = presets.first(where: { $0.width == size.width && $0.height == size.height }) {
            timings.bt.pixelclock = preset.pixelClock
            (timings.bt.hfrontporch, timings.bt.hsync, timings.bt.hbackporch) = (preset.hfp, preset.hsync, preset.hbp)
            (timings.bt.vfrontporch, timings.bt.vsync, timings.bt.vbackporch) = (preset.vfp, preset.vsync, preset.vbp)
            timings.bt.polarities = preset.polarities
            timings.bt.standards = preset.standards
            timings.bt.flags = UInt32(V4L2_DV_FL_HAS_CEA861_VIC) | (preset.vic == 1 ? 0 : UInt32(V4L2_DV_FL_CAN_REDUCE_FPS | V4L2_DV_FL_IS_CE_VIDEO))
            timings.bt.cea861_vic = preset.vic
        } else {
            // CVT reduced blanking: 160 pixels of horizontal blanking, positive hsync, negative vsync.
            (timings.bt.hfrontporch, timings.bt.hsync, timings.bt.hbackporch) = (48, 32, 80)
            (timings.bt.vfrontporch, timings.bt.vsync, timings.bt.vbackporch) = (3, 6, 20)
            let total = UInt64(size.width + 160) * UInt64(size.height + 29)
            timings.bt.pixelclock = total * 60
            timings.bt.polarities = UInt32(V4L2_DV_HSYNC_POS_POL)
            timings.bt.standards = UInt32(V4L2_DV_BT_STD_CVT)
            timings.bt.flags = UInt32(V4L2_DV_FL_REDUCED_BLANKING)
        }
        return timings
    }

    /// The picture size of timings the receiver takes: BT.656/1120, progressive, an even width,
    /// within the receiver's range. Nil for anything else (EINVAL).
    static func size(of timings: v4l2_dv_timings) -> SimulatedFrameSize? {
        guard timings.type == UInt32(V4L2_DV_BT_656_1120), timings.bt.interlaced == 0 else { return nil }
        let (width, height) = (timings.bt.width, timings.bt.height)
        guard width >= minimumSize.width, width <= maximumSize.width, width % 2 == 0,
              height >= minimumSize.height, height <= maximumSize.height else { return nil }
        return SimulatedFrameSize(width: width, height: height)
    }
}
