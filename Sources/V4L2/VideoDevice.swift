import SystemPackage
import CV4L2
#if canImport(Glibc)
import Glibc
#endif

/// An open V4L2 device node: one thin, typed wrapper per ioctl.
///
/// Every call goes through a ``DeviceBackend`` (the kernel, libv4l2 or the simulator).
/// Errors come back as ``V4L2Error`` values naming the device, the ioctl and the errno.
/// EINTR is retried in exactly one place (``perform(_:_:_:)``). The per-frame calls,
/// ``queue(_:)``, ``dequeue(bufferType:memory:)`` and ``poll(events:timeoutMilliseconds:)``,
/// do not allocate.
///
/// The descriptor is opened non-blocking, owned as a swift-system `FileDescriptor`, and closed
/// exactly once, through the backend that opened it, when the object goes away.
public final class VideoDevice: Sendable {
    /// The path the device was opened with.
    public let path: String
    /// The open descriptor, owned by this object (do not close it): the backend closes it in deinit.
    public let fileDescriptor: FileDescriptor
    /// The open descriptor's number, for the calls that take one (poll, mmap, a backend's ioctl).
    @inlinable public var descriptor: Int32 { fileDescriptor.rawValue }
    /// How system calls are made.
    public let backend: any DeviceBackend
    /// What QUERYCAP returned when the device was opened.
    public let capabilities: DeviceCapabilities

    /// Opens `path` and checks with VIDIOC_QUERYCAP that it is a V4L2 device.
    ///
    /// - Throws: ``V4L2Error`` for `open` (missing path, permission) or for
    ///   `VIDIOC_QUERYCAP` (not a V4L2 device).
    /// Opens the device at `path` (``init(path:backend:nonBlocking:)`` with a swift-system path).
    public convenience init(path: FilePath, backend: any DeviceBackend = KernelBackend.shared, nonBlocking: Bool = true) throws(V4L2Error) {
        try self.init(path: path.string, backend: backend, nonBlocking: nonBlocking)
    }

    /// The device node's path as a swift-system `FilePath`.
    public var filePath: FilePath { FilePath(path) }

    public init(path: String, backend: any DeviceBackend = KernelBackend.shared, nonBlocking: Bool = true) throws(V4L2Error) {
        var flags = O_RDWR
        if nonBlocking { flags |= O_NONBLOCK }
        var fd = FileDescriptor(rawValue: -1)
        while true {
            switch backend.open(path: path, flags: flags) {
            case .success(let opened): fd = FileDescriptor(rawValue: opened)
            case .failure(.interrupted): continue
            case .failure(let errno):
                if errno == .noSuchAddressOrDevice || errno == .noSuchDevice {
                    throw V4L2Error(device: path, operation: "open", errno: errno,
                                    hint: "the device node exists but no driver answers it")
                }
                throw V4L2Error(device: path, operation: "open", errno: errno)
            }
            break
        }
        var cap = v4l2_capability()
        var result: Errno?
        repeat {
            result = withUnsafeMutablePointer(to: &cap) { backend.ioctl(fd.rawValue, request: CV4L2_VIDIOC_QUERYCAP, argument: $0) }
        } while result == .interrupted
        if let result {
            _ = backend.close(fd.rawValue)
            throw V4L2Error(device: path, operation: "VIDIOC_QUERYCAP", errno: result)
        }
        self.path = path
        self.fileDescriptor = fd
        self.backend = backend
        let version = cap.version
        let caps = CapabilityFlags(rawValue: cap.capabilities)
        self.capabilities = DeviceCapabilities(
            driver: VideoDevice.string(from: cap.driver),
            card: VideoDevice.string(from: cap.card),
            busInfo: VideoDevice.string(from: cap.bus_info),
            version: "\(version >> 16).\((version >> 8) & 0xff).\(version & 0xff)",
            capabilities: caps,
            deviceCapabilities: caps.contains(.deviceCaps) ? CapabilityFlags(rawValue: cap.device_caps) : caps)
    }

    deinit {
        // Through the backend that opened it (the simulator keeps its own books), exactly once.
        _ = backend.close(fileDescriptor.rawValue)
    }

    // MARK: - The one place ioctls are made

    /// Makes `request` with `argument`, retrying EINTR. Returns the errno on failure.
    @inline(__always)
    func rawIoctl<T>(_ request: UInt, _ argument: inout T) -> Errno? {
        while true {
            let result = withUnsafeMutablePointer(to: &argument) {
                backend.ioctl(descriptor, request: request, argument: UnsafeMutableRawPointer($0))
            }
            if result != .interrupted { return result }
        }
    }

    /// Makes `request` and throws a ``V4L2Error`` naming `name` on failure.
    @inline(__always)
    func perform<T>(_ name: StaticString, _ request: UInt, _ argument: inout T) throws(V4L2Error) {
        if let errno = rawIoctl(request, &argument) {
            throw error(name, errno)
        }
    }

    /// Whether the driver still answers this descriptor: false once VIDIOC_QUERYCAP fails with
    /// ENODEV, as it does after a USB camera was unplugged (DQBUF may have said EINVAL or POLLERR).
    public var isDisconnected: Bool {
        var cap = v4l2_capability()
        return rawIoctl(CV4L2_VIDIOC_QUERYCAP, &cap) == .noSuchDevice
    }

    /// A ``V4L2Error`` for this device.
    public func error(_ operation: StaticString, _ errno: Errno?, detail: String? = nil, hint: String? = nil) -> V4L2Error {
        V4L2Error(device: path, operation: "\(operation)", errno: errno, detail: detail, hint: hint)
    }

    /// The most entries FrameBridge reads from one enumeration (VIDIOC_ENUMINPUT, ENUM_FMT,
    /// ENUM_FRAMESIZES, ENUM_FRAMEINTERVALS, ENUMSTD, ENUM_DV_TIMINGS, controls by
    /// V4L2_CTRL_FLAG_NEXT_CTRL). Real drivers list far fewer (vivid: 84 formats); a driver
    /// that answers index 1024 is taken to never end its list.
    public static let enumerationLimit = 1024

    /// The error for a driver that answered more than ``enumerationLimit`` entries of
    /// `operation` without ending the list with EINVAL. Its `errno` is nil: FrameBridge found it.
    func endlessEnumeration(_ operation: StaticString, detail: String? = nil) -> V4L2Error {
        error(operation, nil,
              detail: detail ?? "the driver listed more than \(VideoDevice.enumerationLimit) entries without ending the list with EINVAL",
              hint: "the driver does not end its enumeration; FrameBridge stopped reading it")
    }

    static func string<T>(from tuple: T) -> String {
        withUnsafeBytes(of: tuple) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    // MARK: - Inputs

    /// VIDIOC_ENUMINPUT over all indexes.
    public func inputs() throws(V4L2Error) -> [VideoInput] {
        var result: [VideoInput] = []
        for index in UInt32(0)...UInt32(VideoDevice.enumerationLimit) {
            var input = v4l2_input()
            input.index = index
            if let errno = rawIoctl(CV4L2_VIDIOC_ENUMINPUT, &input) {
                if errno == .invalidArgument { break }
                if errno == .inappropriateIOCTLForDevice && index == 0 { break }
                throw error("VIDIOC_ENUMINPUT", errno)
            }
            if index == VideoDevice.enumerationLimit { throw endlessEnumeration("VIDIOC_ENUMINPUT") }
            result.append(VideoInput(index: input.index, name: VideoDevice.string(from: input.name), type: input.type,
                                     status: input.status, capabilities: input.capabilities))
        }
        return result
    }

    /// VIDIOC_G_INPUT.
    public func currentInput() throws(V4L2Error) -> UInt32 {
        var index: Int32 = 0
        try perform("VIDIOC_G_INPUT", CV4L2_VIDIOC_G_INPUT, &index)
        return UInt32(bitPattern: index)
    }

    /// VIDIOC_S_INPUT.
    public func selectInput(_ index: UInt32) throws(V4L2Error) {
        var value = Int32(bitPattern: index)
        if let errno = rawIoctl(CV4L2_VIDIOC_S_INPUT, &value) {
            throw error("VIDIOC_S_INPUT", errno,
                        hint: errno == .invalidArgument ? "input \(index) does not exist (VIDIOC_ENUMINPUT lists the inputs)" : nil)
        }
    }

    // MARK: - Formats

    /// VIDIOC_ENUM_FMT over all indexes of `bufferType`.
    public func formats(_ bufferType: BufferType) throws(V4L2Error) -> [FormatDescription] {
        var result: [FormatDescription] = []
        for index in UInt32(0)...UInt32(VideoDevice.enumerationLimit) {
            var desc = v4l2_fmtdesc()
            desc.index = index
            desc.type = bufferType.rawValue
            if let errno = rawIoctl(CV4L2_VIDIOC_ENUM_FMT, &desc) {
                if errno == .invalidArgument { break }
                throw error("VIDIOC_ENUM_FMT", errno)
            }
            if index == VideoDevice.enumerationLimit { throw endlessEnumeration("VIDIOC_ENUM_FMT") }
            result.append(FormatDescription(index: desc.index, bufferType: bufferType, flags: desc.flags,
                                            description: VideoDevice.string(from: desc.description),
                                            pixelFormat: FourCC(rawValue: desc.pixelformat)))
        }
        return result
    }

    /// The VIDIOC_ENUM_FMT entry of `pixelFormat`, enumerating only up to it: nil when the driver
    /// does not list it. One ioctl for the first format instead of one per format (vivid has 84).
    public func formatDescription(of pixelFormat: FourCC, _ bufferType: BufferType) throws(V4L2Error) -> FormatDescription? {
        for index in UInt32(0)...UInt32(VideoDevice.enumerationLimit) {
            var desc = v4l2_fmtdesc()
            desc.index = index
            desc.type = bufferType.rawValue
            if let errno = rawIoctl(CV4L2_VIDIOC_ENUM_FMT, &desc) {
                if errno == .invalidArgument { return nil }
                throw error("VIDIOC_ENUM_FMT", errno)
            }
            if index == VideoDevice.enumerationLimit { throw endlessEnumeration("VIDIOC_ENUM_FMT") }
            guard desc.pixelformat == pixelFormat.rawValue else { continue }
            return FormatDescription(index: desc.index, bufferType: bufferType, flags: desc.flags,
                                     description: VideoDevice.string(from: desc.description), pixelFormat: pixelFormat)
        }
        return nil
    }

    /// VIDIOC_ENUM_FRAMESIZES for a pixel format.
    public func frameSizes(_ pixelFormat: FourCC) throws(V4L2Error) -> [FrameSize] {
        var result: [FrameSize] = []
        for index in UInt32(0)...UInt32(VideoDevice.enumerationLimit) {
            var size = v4l2_frmsizeenum()
            size.index = index
            size.pixel_format = pixelFormat.rawValue
            if let errno = rawIoctl(CV4L2_VIDIOC_ENUM_FRAMESIZES, &size) {
                if errno == .invalidArgument || (errno == .inappropriateIOCTLForDevice && index == 0) { break }
                throw error("VIDIOC_ENUM_FRAMESIZES", errno)
            }
            if index == VideoDevice.enumerationLimit { throw endlessEnumeration("VIDIOC_ENUM_FRAMESIZES") }
            switch size.type {
            case 1:
                result.append(.discrete(width: size.discrete.width, height: size.discrete.height))
            case 2:
                let s = size.stepwise
                result.append(.continuous(minWidth: s.min_width, maxWidth: s.max_width, minHeight: s.min_height, maxHeight: s.max_height))
                return result
            default:
                let s = size.stepwise
                result.append(.stepwise(minWidth: s.min_width, maxWidth: s.max_width, stepWidth: s.step_width,
                                        minHeight: s.min_height, maxHeight: s.max_height, stepHeight: s.step_height))
                return result
            }
        }
        return result
    }

    /// VIDIOC_ENUM_FRAMEINTERVALS for a pixel format and size.
    public func frameIntervals(_ pixelFormat: FourCC, width: UInt32, height: UInt32) throws(V4L2Error) -> [FrameInterval] {
        var result: [FrameInterval] = []
        for index in UInt32(0)...UInt32(VideoDevice.enumerationLimit) {
            var interval = v4l2_frmivalenum()
            interval.index = index
            interval.pixel_format = pixelFormat.rawValue
            interval.width = width
            interval.height = height
            if let errno = rawIoctl(CV4L2_VIDIOC_ENUM_FRAMEINTERVALS, &interval) {
                if errno == .invalidArgument || (errno == .inappropriateIOCTLForDevice && index == 0) { break }
                throw error("VIDIOC_ENUM_FRAMEINTERVALS", errno)
            }
            if index == VideoDevice.enumerationLimit { throw endlessEnumeration("VIDIOC_ENUM_FRAMEINTERVALS") }
            switch interval.type {
            case 1:
                result.append(.discrete(Fraction(interval.discrete.numerator, interval.discrete.denominator)))
            case 2:
                let s = interval.stepwise
                result.append(.continuous(min: Fraction(s.min.numerator, s.min.denominator),
                                          max: Fraction(s.max.numerator, s.max.denominator)))
                return result
            default:
                let s = interval.stepwise
                result.append(.stepwise(min: Fraction(s.min.numerator, s.min.denominator),
                                        max: Fraction(s.max.numerator, s.max.denominator),
                                        step: Fraction(s.step.numerator, s.step.denominator)))
                return result
            }
        }
        return result
    }

    /// VIDIOC_G_FMT.
    public func format(_ bufferType: BufferType) throws(V4L2Error) -> ImageFormat {
        var raw = v4l2_format()
        raw.type = bufferType.rawValue
        try perform("VIDIOC_G_FMT", CV4L2_VIDIOC_G_FMT, &raw)
        return VideoDevice.imageFormat(from: raw, bufferType)
    }

    /// VIDIOC_G_FMT on the metadata capture queue: the metadata format (uvcvideo: `UVCH`, the
    /// UVC payload headers) and the size of one metadata buffer.
    public func metadataFormat() throws(V4L2Error) -> (dataFormat: FourCC, bufferSize: UInt32) {
        var raw = v4l2_format()
        raw.type = 13 // V4L2_BUF_TYPE_META_CAPTURE
        try perform("VIDIOC_G_FMT", CV4L2_VIDIOC_G_FMT, &raw)
        return (FourCC(rawValue: raw.fmt.meta.dataformat), raw.fmt.meta.buffersize)
    }

    /// VIDIOC_S_FMT: asks for `format` and returns what the driver chose (it may adjust it).
    @discardableResult
    public func setFormat(_ format: ImageFormat) throws(V4L2Error) -> ImageFormat {
        var raw = VideoDevice.rawFormat(from: format)
        try perform("VIDIOC_S_FMT", CV4L2_VIDIOC_S_FMT, &raw)
        return VideoDevice.imageFormat(from: raw, format.bufferType)
    }

    /// VIDIOC_TRY_FMT: what the driver would choose for `format`, without changing anything.
    public func tryFormat(_ format: ImageFormat) throws(V4L2Error) -> ImageFormat {
        var raw = VideoDevice.rawFormat(from: format)
        try perform("VIDIOC_TRY_FMT", CV4L2_VIDIOC_TRY_FMT, &raw)
        return VideoDevice.imageFormat(from: raw, format.bufferType)
    }

    static func rawFormat(from format: ImageFormat) -> v4l2_format {
        var raw = v4l2_format()
        raw.type = format.bufferType.rawValue
        if format.bufferType.isMultiplanar {
            raw.fmt.pix_mp.width = format.width
            raw.fmt.pix_mp.height = format.height
            raw.fmt.pix_mp.pixelformat = format.pixelFormat.rawValue
            raw.fmt.pix_mp.field = format.field
            raw.fmt.pix_mp.colorspace = format.colorspace
            raw.fmt.pix_mp.num_planes = UInt8(min(format.planes.count, maximumPlaneCount))
            withUnsafeMutableBytes(of: &raw.fmt.pix_mp.plane_fmt) { bytes in
                let planes = bytes.bindMemory(to: v4l2_plane_pix_format.self)
                for (i, plane) in format.planes.prefix(maximumPlaneCount).enumerated() {
                    planes[i].bytesperline = plane.bytesPerLine
                    planes[i].sizeimage = plane.sizeImage
                }
            }
        } else {
            raw.fmt.pix.width = format.width
            raw.fmt.pix.height = format.height
            raw.fmt.pix.pixelformat = format.pixelFormat.rawValue
            raw.fmt.pix.field = format.field
            raw.fmt.pix.colorspace = format.colorspace
            if let plane = format.planes.first {
                raw.fmt.pix.bytesperline = plane.bytesPerLine
                raw.fmt.pix.sizeimage = plane.sizeImage
            }
        }
        return raw
    }

    static func imageFormat(from raw: v4l2_format, _ bufferType: BufferType) -> ImageFormat {
        var raw = raw
        if bufferType.isMultiplanar {
            let mp = raw.fmt.pix_mp
            let count = min(Int(mp.num_planes), maximumPlaneCount)
            let planes = withUnsafeBytes(of: &raw.fmt.pix_mp.plane_fmt) { bytes in
                let planes = bytes.bindMemory(to: v4l2_plane_pix_format.self)
                return (0..<count).map { PlaneFormat(bytesPerLine: planes[$0].bytesperline, sizeImage: planes[$0].sizeimage) }
            }
            return ImageFormat(bufferType: bufferType, width: mp.width, height: mp.height,
                               pixelFormat: FourCC(rawValue: mp.pixelformat), field: mp.field,
                               colorspace: mp.colorspace, planes: planes,
                               ycbcrEncoding: UInt32(mp.ycbcr_enc), quantization: UInt32(mp.quantization))
        }
        let pix = raw.fmt.pix
        return ImageFormat(bufferType: bufferType, width: pix.width, height: pix.height,
                           pixelFormat: FourCC(rawValue: pix.pixelformat), field: pix.field, colorspace: pix.colorspace,
                           planes: [PlaneFormat(bytesPerLine: pix.bytesperline, sizeImage: pix.sizeimage)],
                           ycbcrEncoding: pix.ycbcr_enc, quantization: pix.quantization)
    }

    // MARK: - Frame rate

    /// VIDIOC_G_PARM: the time per frame, or nil when the driver does not report one.
    public func frameInterval(_ bufferType: BufferType) throws(V4L2Error) -> Fraction? {
        var parm = v4l2_streamparm()
        parm.type = bufferType.rawValue
        if let errno = rawIoctl(CV4L2_VIDIOC_G_PARM, &parm) {
            if errno == .inappropriateIOCTLForDevice { return nil }
            throw error("VIDIOC_G_PARM", errno)
        }
        let tpf = parm.parm.capture.timeperframe
        return tpf.denominator == 0 ? nil : Fraction(tpf.numerator, tpf.denominator)
    }

    /// VIDIOC_S_PARM: asks for a time per frame; returns what the driver chose.
    @discardableResult
    public func setFrameInterval(_ interval: Fraction, _ bufferType: BufferType) throws(V4L2Error) -> Fraction {
        var parm = v4l2_streamparm()
        parm.type = bufferType.rawValue
        parm.parm.capture.timeperframe.numerator = interval.numerator
        parm.parm.capture.timeperframe.denominator = interval.denominator
        try perform("VIDIOC_S_PARM", CV4L2_VIDIOC_S_PARM, &parm)
        let tpf = parm.parm.capture.timeperframe
        return Fraction(tpf.numerator, tpf.denominator)
    }

    // MARK: - Controls

    /// All controls, by VIDIOC_QUERY_EXT_CTRL with V4L2_CTRL_FLAG_NEXT_CTRL (control classes left out).
    public func controls() throws(V4L2Error) -> [ControlInfo] {
        var result: [ControlInfo] = []
        var id: UInt32 = 0
        let nextControl: UInt32 = 0x8000_0000
        let nextCompound: UInt32 = 0x4000_0000
        for count in 0...VideoDevice.enumerationLimit {
            var query = v4l2_query_ext_ctrl()
            query.id = id | nextControl | nextCompound
            if let errno = rawIoctl(CV4L2_VIDIOC_QUERY_EXT_CTRL, &query) {
                if errno == .invalidArgument || errno == .inappropriateIOCTLForDevice { break }
                throw error("VIDIOC_QUERY_EXT_CTRL", errno)
            }
            // The next control has a higher id: a driver that answers the same one again (or a
            // lower one), or too many, would keep this loop going for ever.
            if count > 0 && query.id <= id {
                throw endlessEnumeration("VIDIOC_QUERY_EXT_CTRL", detail: "asked for the control after 0x\(String(id, radix: 16)), the driver answered 0x\(String(query.id, radix: 16)) (V4L2_CTRL_FLAG_NEXT_CTRL moves to a higher id)")
            }
            if count == VideoDevice.enumerationLimit { throw endlessEnumeration("VIDIOC_QUERY_EXT_CTRL") }
            id = query.id
            let type = ControlType(rawValue: query.type) ?? .unknown
            if type == .controlClass { continue }
            var info = ControlInfo(id: query.id, type: type, name: VideoDevice.string(from: query.name),
                                   minimum: query.minimum, maximum: query.maximum, step: query.step,
                                   defaultValue: query.default_value, flags: query.flags, menuItems: [])
            if type == .menu || type == .integerMenu, query.minimum >= 0, query.maximum >= query.minimum,
               query.maximum - query.minimum < 1024 {
                for index in query.minimum...query.maximum {
                    var menu = v4l2_querymenu()
                    menu.id = query.id
                    menu.index = UInt32(index)
                    guard rawIoctl(CV4L2_VIDIOC_QUERYMENU, &menu) == nil else { continue }
                    let name = type == .menu ? VideoDevice.string(from: menu.name) : String(menu.value)
                    info.menuItems.append(ControlMenuItem(index: UInt32(index), name: name))
                }
            }
            result.append(info)
        }
        return result
    }

    /// The control whose v4l2-ctl name (`osd_text_mode`) or driver name (`OSD Text Mode`) is `name`.
    public func control(named name: String) throws(V4L2Error) -> ControlInfo? {
        let wanted = ControlInfo.commandLineName(for: name)
        return try controls().first { $0.commandLineName == wanted }
    }

    /// VIDIOC_G_EXT_CTRLS for one numeric control.
    ///
    /// The kernel writes `value64` only for 64-bit controls and `value` (the low half) for
    /// the others, so pass `type` to read the right field. Without it, a value whose high
    /// half is zero is taken as a 32-bit one (so negative 32-bit values come back negative).
    public func controlValue(_ id: UInt32, type: ControlType? = nil) throws(V4L2Error) -> Int64 {
        var control = v4l2_ext_control()
        control.id = id
        try withExtendedControl(&control, "VIDIOC_G_EXT_CTRLS", CV4L2_VIDIOC_G_EXT_CTRLS)
        switch type {
        case .integer64?: return control.value64
        case nil where control.value64 >> 32 != 0: return control.value64
        default: return Int64(control.value)
        }
    }

    /// VIDIOC_S_EXT_CTRLS for one numeric control (a button control is pressed by any value).
    public func setControlValue(_ id: UInt32, _ value: Int64, type: ControlType = .integer) throws(V4L2Error) {
        var control = v4l2_ext_control()
        control.id = id
        if type == .integer64 {
            control.value64 = value
        } else {
            control.value = Int32(truncatingIfNeeded: value)
        }
        try withExtendedControl(&control, "VIDIOC_S_EXT_CTRLS", CV4L2_VIDIOC_S_EXT_CTRLS)
    }

    private func withExtendedControl(_ control: inout v4l2_ext_control, _ name: StaticString, _ request: UInt) throws(V4L2Error) {
        let errno: Errno? = withUnsafeMutablePointer(to: &control) { pointer in
            var controls = v4l2_ext_controls()
            controls.which = 0 // V4L2_CTRL_WHICH_CUR_VAL
            controls.count = 1
            controls.controls = pointer
            return rawIoctl(request, &controls)
        }
        if let errno {
            throw error(name, errno, detail: "control 0x" + String(control.id, radix: 16))
        }
    }

    // MARK: - Buffers

    /// VIDIOC_REQBUFS: asks for `count` buffers of `memory` (0 frees them all).
    @discardableResult
    public func requestBuffers(count: UInt32, bufferType: BufferType, memory: MemoryKind) throws(V4L2Error) -> RequestedBuffers {
        var request = v4l2_requestbuffers()
        request.count = count
        request.type = bufferType.rawValue
        request.memory = memory.rawValue
        if let errno = rawIoctl(CV4L2_VIDIOC_REQBUFS, &request) {
            throw error("VIDIOC_REQBUFS", errno, detail: "the driver refused \(count) \(memory) buffers",
                        hint: errno == .invalidArgument ? "the queue may not support \(memory) memory (the capabilities VIDIOC_REQBUFS and VIDIOC_CREATE_BUFS report list the memory kinds), or the driver could not set up its queue" : nil)
        }
        return RequestedBuffers(count: request.count, capabilities: BufferCapabilities(rawValue: request.capabilities))
    }

    /// VIDIOC_CREATE_BUFS: adds `count` buffers of `memory` sized for `format`.
    public func createBuffers(count: UInt32, memory: MemoryKind, format: ImageFormat) throws(V4L2Error) -> CreatedBuffers {
        var create = v4l2_create_buffers()
        create.count = count
        create.memory = memory.rawValue
        create.format = VideoDevice.rawFormat(from: format)
        try perform("VIDIOC_CREATE_BUFS", CV4L2_VIDIOC_CREATE_BUFS, &create)
        return CreatedBuffers(index: create.index, count: create.count, capabilities: BufferCapabilities(rawValue: create.capabilities))
    }

    /// The queue's buffer capability bits (`V4L2_BUF_CAP_*`) from VIDIOC_CREATE_BUFS with count
    /// 0, which allocates nothing and needs no ownership of the queue. Succeeds when `memory` is
    /// accepted; EINVAL (memory kind not supported) still carries the bits on a kernel that has them.
    public func bufferCapabilities(format: ImageFormat, memory: MemoryKind) -> Result<BufferCapabilities, V4L2Error> {
        var create = v4l2_create_buffers()
        create.count = 0
        create.memory = memory.rawValue
        create.format = VideoDevice.rawFormat(from: format)
        if let errno = rawIoctl(CV4L2_VIDIOC_CREATE_BUFS, &create) {
            if errno == .invalidArgument && create.capabilities != 0 {
                return .success(BufferCapabilities(rawValue: create.capabilities))
            }
            return .failure(error("VIDIOC_CREATE_BUFS", errno, detail: "count 0 (capability query) for \(memory) memory"))
        }
        return .success(BufferCapabilities(rawValue: create.capabilities))
    }

    /// VIDIOC_QUERYBUF.
    public func queryBuffer(index: UInt32, bufferType: BufferType, memory: MemoryKind) throws(V4L2Error) -> BufferDescriptor {
        // A multi-planar QUERYBUF needs a planes array at least as long as the buffer's planes.
        var descriptor = BufferDescriptor(index: index, bufferType: bufferType, memory: memory,
                                          planeCount: bufferType.isMultiplanar ? maximumPlaneCount : 1)
        try withRawBuffer(&descriptor, "VIDIOC_QUERYBUF", CV4L2_VIDIOC_QUERYBUF)
        return descriptor
    }

    /// VIDIOC_QBUF: hands `buffer` to the driver. For USERPTR and DMABUF the planes'
    /// `userPointer`/`fd` and `length` say where the memory is. The descriptor is read in place.
    public func queue(_ buffer: BufferDescriptor) throws(V4L2Error) {
        try withUnsafePointer(to: buffer) { (pointer) throws(V4L2Error) in try queue(descriptorAt: pointer) }
    }

    /// VIDIOC_QBUF of the descriptor at `descriptor`, for callers that keep their descriptors
    /// in stable memory: passing `pointer.pointee` by value makes Swift copy the ~300-byte
    /// descriptor first (the callee could otherwise see it change), on every frame.
    public func queue(descriptorAt descriptor: UnsafePointer<BufferDescriptor>) throws(V4L2Error) {
        var raw = v4l2_buffer()
        raw.index = descriptor.pointee.index
        raw.type = descriptor.pointee.bufferType.rawValue
        raw.memory = descriptor.pointee.memory.rawValue
        raw.field = descriptor.pointee.field
        // An OUTPUT buffer's timestamp travels to the CAPTURE buffer made from it
        // (V4L2_BUF_FLAG_TIMESTAMP_COPY): it matches an encoded frame to its captured one.
        let timestamp = descriptor.pointee.timestampNanoseconds
        if timestamp != 0 {
            raw.timestamp.tv_sec = Int(timestamp / 1_000_000_000)
            raw.timestamp.tv_usec = Int(timestamp % 1_000_000_000 / 1_000)
        }
        let errno: Errno?
        if descriptor.pointee.bufferType.isMultiplanar {
            errno = multiplanarQueue(&raw, descriptor)
        } else {
            let plane = descriptor.pointee.planes[0]
            raw.length = plane.length
            raw.bytesused = plane.bytesUsed
            switch descriptor.pointee.memory {
            case .mmap: raw.m.offset = plane.mapOffset
            case .userPointer: raw.m.userptr = plane.userPointer
            case .dmabuf: raw.m.fd = plane.fd
            }
            errno = rawIoctl(CV4L2_VIDIOC_QBUF, &raw)
        }
        if let errno { throw error("VIDIOC_QBUF", errno) }
    }

    /// The multi-planar half of ``queue(_:)``, out of line (see `multiplanarIoctl`).
    @inline(never)
    private func multiplanarQueue(_ raw: inout v4l2_buffer, _ descriptor: UnsafePointer<BufferDescriptor>) -> Errno? {
        var planes = VideoDevice.emptyPlanes
        let count = min(max(descriptor.pointee.planeCount, 1), maximumPlaneCount)
        return withUnsafeMutableBytes(of: &planes) { bytes -> Errno? in
            let planes = bytes.bindMemory(to: v4l2_plane.self)
            for i in 0..<count {
                let plane = descriptor.pointee.planes[i]
                planes[i].length = plane.length
                planes[i].bytesused = plane.bytesUsed
                planes[i].data_offset = plane.dataOffset
                switch descriptor.pointee.memory {
                case .mmap: planes[i].m.mem_offset = plane.mapOffset
                case .userPointer: planes[i].m.userptr = plane.userPointer
                case .dmabuf: planes[i].m.fd = plane.fd
                }
            }
            raw.length = UInt32(count)
            raw.m.planes = planes.baseAddress
            return rawIoctl(CV4L2_VIDIOC_QBUF, &raw)
        }
    }

    /// VIDIOC_DQBUF: takes a filled buffer from the driver, or nil when none is ready (EAGAIN).
    public func dequeue(bufferType: BufferType, memory: MemoryKind) throws(V4L2Error) -> BufferDescriptor? {
        var descriptor = BufferDescriptor(index: 0, bufferType: bufferType, memory: memory)
        guard try dequeue(into: &descriptor) else { return nil }
        return descriptor
    }

    /// VIDIOC_DQBUF into `descriptor` (whose `bufferType` and `memory` say which queue).
    /// Returns false when no buffer is ready (EAGAIN). Nothing is allocated or copied in bulk.
    public func dequeue(into descriptor: inout BufferDescriptor) throws(V4L2Error) -> Bool {
        try withRawBuffer(&descriptor, "VIDIOC_DQBUF", CV4L2_VIDIOC_DQBUF, tolerateWouldBlock: true)
    }

    private static let emptyPlanes = (v4l2_plane(), v4l2_plane(), v4l2_plane(), v4l2_plane(),
                                      v4l2_plane(), v4l2_plane(), v4l2_plane(), v4l2_plane())

    /// The multi-planar half of ``withRawBuffer(_:_:_:tolerateWouldBlock:)``: the ioctl with a
    /// `v4l2_plane` array on the stack, and the planes copied back. Out of line, so the
    /// single-planar path keeps a small stack frame.
    @inline(never)
    private func multiplanarIoctl(_ request: UInt, _ raw: inout v4l2_buffer, _ descriptor: inout BufferDescriptor) -> Errno? {
        var planes = VideoDevice.emptyPlanes
        return withUnsafeMutableBytes(of: &planes) { bytes -> Errno? in
            let planes = bytes.bindMemory(to: v4l2_plane.self)
            raw.length = UInt32(maximumPlaneCount)
            raw.m.planes = planes.baseAddress
            let result = rawIoctl(request, &raw)
            if result == nil {
                let returned = min(Int(raw.length), maximumPlaneCount)
                descriptor.planeCount = returned
                for i in 0..<returned {
                    var plane = BufferPlane()
                    plane.length = planes[i].length
                    plane.bytesUsed = planes[i].bytesused
                    plane.dataOffset = planes[i].data_offset
                    switch descriptor.memory {
                    case .mmap: plane.mapOffset = planes[i].m.mem_offset
                    case .userPointer: plane.userPointer = planes[i].m.userptr
                    case .dmabuf: plane.fd = planes[i].m.fd
                    }
                    descriptor.planes[i] = plane
                }
            }
            return result
        }
    }

    /// Fills a `v4l2_buffer` (and, multi-planar, a `v4l2_plane` array on the stack) from
    /// `descriptor`, makes the ioctl, and copies the driver's answer back. Returns false for
    /// EAGAIN when `tolerateWouldBlock`.
    @discardableResult
    private func withRawBuffer(_ descriptor: inout BufferDescriptor, _ name: StaticString, _ request: UInt,
                               tolerateWouldBlock: Bool = false) throws(V4L2Error) -> Bool {
        var raw = v4l2_buffer()
        raw.index = descriptor.index
        raw.type = descriptor.bufferType.rawValue
        raw.memory = descriptor.memory.rawValue
        raw.field = descriptor.field
        let errno: Errno?
        if descriptor.bufferType.isMultiplanar {
            errno = multiplanarIoctl(request, &raw, &descriptor)
        } else {
            errno = rawIoctl(request, &raw)
            if errno == nil {
                var plane = BufferPlane()
                plane.length = raw.length
                plane.bytesUsed = raw.bytesused
                switch descriptor.memory {
                case .mmap: plane.mapOffset = raw.m.offset
                case .userPointer: plane.userPointer = raw.m.userptr
                case .dmabuf: plane.fd = raw.m.fd
                }
                descriptor.planeCount = 1
                descriptor.planes[0] = plane
            }
        }
        if let errno {
            if tolerateWouldBlock && errno == .resourceTemporarilyUnavailable { return false }
            throw error(name, errno)
        }
        descriptor.index = raw.index
        descriptor.flags = BufferFlags(rawValue: raw.flags)
        descriptor.field = raw.field
        descriptor.sequence = raw.sequence
        // Wrapping arithmetic: a driver's absurd timestamp must not trap the process on overflow.
        descriptor.timestampNanoseconds = Int64(raw.timestamp.tv_sec) &* 1_000_000_000 &+ Int64(raw.timestamp.tv_usec) &* 1_000
        return true
    }

    /// VIDIOC_EXPBUF: exports plane `plane` of MMAP buffer `index` as a dmabuf fd.
    public func exportBuffer(index: UInt32, plane: UInt32 = 0, bufferType: BufferType) throws(V4L2Error) -> Int32 {
        var export = v4l2_exportbuffer()
        export.type = bufferType.rawValue
        export.index = index
        export.plane = plane
        export.flags = UInt32(O_RDWR | O_CLOEXEC)
        try perform("VIDIOC_EXPBUF", CV4L2_VIDIOC_EXPBUF, &export)
        return export.fd
    }

    /// VIDIOC_STREAMON.
    public func streamOn(_ bufferType: BufferType) throws(V4L2Error) {
        var type = Int32(bitPattern: bufferType.rawValue)
        try perform("VIDIOC_STREAMON", CV4L2_VIDIOC_STREAMON, &type)
    }

    /// VIDIOC_STREAMOFF: stops streaming and takes every buffer back from the driver.
    public func streamOff(_ bufferType: BufferType) throws(V4L2Error) {
        var type = Int32(bitPattern: bufferType.rawValue)
        try perform("VIDIOC_STREAMOFF", CV4L2_VIDIOC_STREAMOFF, &type)
    }

    // MARK: - Memory and waiting

    /// mmap(2) of a buffer plane at `offset` (from QUERYBUF), read and write.
    public func map(length: Int, offset: UInt32) throws(V4L2Error) -> UnsafeMutableRawBufferPointer {
        switch backend.mmap(descriptor, length: length, protection: PROT_READ | PROT_WRITE, offset: Int64(offset)) {
        case .success(let address): return UnsafeMutableRawBufferPointer(start: address, count: length)
        case .failure(let errno): throw error("mmap", errno, detail: "\(length) bytes at offset \(offset)")
        }
    }

    /// munmap(2) of a mapping made by ``map(length:offset:)``.
    public func unmap(_ mapping: UnsafeMutableRawBufferPointer) {
        guard let base = mapping.baseAddress else { return }
        _ = backend.munmap(base, length: mapping.count)
    }

    /// poll(2) on the device and `wakeup` together, retrying EINTR (with the time left). Returns
    /// the device's events (empty on timeout or wake-up) and whether `wakeup` was signalled;
    /// the event is not drained.
    ///
    /// - Parameter deadline: the caller's CLOCK_MONOTONIC deadline, if it has one, for the
    ///   time left after EINTR; without it the clock is read here (not for -1 or 0).
    public func poll(events: PollEvents = [.input, .error], wakeup: WakeupEvent,
                     timeoutMilliseconds: Int32, deadline: Int64? = nil) throws(V4L2Error) -> (events: PollEvents, woken: Bool) {
        let deadline = deadline ?? (timeoutMilliseconds > 0 ? MonotonicClock.nanoseconds() + Int64(timeoutMilliseconds) * 1_000_000 : 0)
        var timeout = timeoutMilliseconds
        while true {
            switch backend.poll(descriptor, events: events.rawValue, wakeup: wakeup.descriptor, timeoutMilliseconds: timeout) {
            case .success(let result): return (PollEvents(rawValue: result.revents), result.woken)
            case .failure(.interrupted):
                if timeoutMilliseconds >= 0 {
                    timeout = Int32(clamping: max(0, (deadline - MonotonicClock.nanoseconds() + 999_999) / 1_000_000))
                }
                continue
            case .failure(let errno): throw error("poll", errno)
            }
        }
    }

    /// poll(2) on the device, retrying EINTR. Returns the events that happened (empty on timeout).
    public func poll(events: PollEvents = [.input, .error], timeoutMilliseconds: Int32) throws(V4L2Error) -> PollEvents {
        while true {
            switch backend.poll(descriptor, events: events.rawValue, timeoutMilliseconds: timeoutMilliseconds) {
            case .success(let revents): return PollEvents(rawValue: revents)
            case .failure(.interrupted): continue
            case .failure(let errno): throw error("poll", errno)
            }
        }
    }
}
