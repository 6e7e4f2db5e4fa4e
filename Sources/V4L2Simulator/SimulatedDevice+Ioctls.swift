import SystemPackage
import CV4L2
import V4L2
#if canImport(Glibc)
import Glibc
#endif

extension SimulatedDevice {
    /// Answers one ioctl the way a V4L2 driver on videobuf2 would.
    func ioctl(_ fd: Int32, _ request: UInt, _ argument: UnsafeMutableRawPointer, registry: SimulatedRegistry) -> Errno? {
        count(request)
        guard isV4L2 else { return .inappropriateIOCTLForDevice }
        if disconnected { return .noSuchDevice }
        if !faults.isEmpty,
           let errno = applyCallFault(request: request,
                                      framePath: request == CV4L2_VIDIOC_DQBUF || request == CV4L2_VIDIOC_QBUF) {
            return errno
        }
        // Not on the frame path: reading the array is an exclusivity check per call.
        if request != CV4L2_VIDIOC_DQBUF && request != CV4L2_VIDIOC_QBUF && !endlessEnumerations.isEmpty && endlessEnumerations.contains(request) {
            return endlessEnumeration(request, argument)
        }
        switch request {
        case CV4L2_VIDIOC_DQBUF: return dequeueBuffer(fd, argument.assumingMemoryBound(to: v4l2_buffer.self))
        case CV4L2_VIDIOC_QBUF: return queueBuffer(fd, argument.assumingMemoryBound(to: v4l2_buffer.self), registry: registry)
        case CV4L2_VIDIOC_QUERYBUF: return queryBuffer(argument.assumingMemoryBound(to: v4l2_buffer.self))
        case CV4L2_VIDIOC_REQBUFS: return requestBuffers(fd, argument.assumingMemoryBound(to: v4l2_requestbuffers.self), registry: registry)
        case CV4L2_VIDIOC_CREATE_BUFS: return createBuffers(fd, argument.assumingMemoryBound(to: v4l2_create_buffers.self), registry: registry)
        case CV4L2_VIDIOC_EXPBUF: return exportBuffer(fd, argument.assumingMemoryBound(to: v4l2_exportbuffer.self))
        case CV4L2_VIDIOC_STREAMON: return streamOn(fd, argument.load(as: UInt32.self))
        case CV4L2_VIDIOC_STREAMOFF: return streamOff(fd, argument.load(as: UInt32.self))
        case CV4L2_VIDIOC_QUERYCAP: return queryCapabilities(argument.assumingMemoryBound(to: v4l2_capability.self))
        case CV4L2_VIDIOC_ENUMINPUT: return enumerateInput(argument.assumingMemoryBound(to: v4l2_input.self))
        case CV4L2_VIDIOC_G_INPUT:
            guard isCapture else { return .inappropriateIOCTLForDevice }
            argument.storeBytes(of: input, as: UInt32.self)
            return nil
        case CV4L2_VIDIOC_S_INPUT: return selectInput(argument.load(as: UInt32.self))
        case CV4L2_VIDIOC_ENUM_FMT: return enumerateFormat(argument.assumingMemoryBound(to: v4l2_fmtdesc.self))
        case CV4L2_VIDIOC_ENUM_FRAMESIZES: return enumerateFrameSize(argument.assumingMemoryBound(to: v4l2_frmsizeenum.self))
        case CV4L2_VIDIOC_ENUM_FRAMEINTERVALS: return enumerateFrameInterval(argument.assumingMemoryBound(to: v4l2_frmivalenum.self))
        case CV4L2_VIDIOC_G_FMT: return getFormat(argument.assumingMemoryBound(to: v4l2_format.self))
        case CV4L2_VIDIOC_S_FMT: return setFormat(argument.assumingMemoryBound(to: v4l2_format.self), commit: true)
        case CV4L2_VIDIOC_TRY_FMT: return setFormat(argument.assumingMemoryBound(to: v4l2_format.self), commit: false)
        case CV4L2_VIDIOC_G_PARM: return streamParameters(argument.assumingMemoryBound(to: v4l2_streamparm.self), set: false)
        case CV4L2_VIDIOC_S_PARM: return streamParameters(argument.assumingMemoryBound(to: v4l2_streamparm.self), set: true)
        case CV4L2_VIDIOC_QUERY_EXT_CTRL: return queryExtendedControl(argument.assumingMemoryBound(to: v4l2_query_ext_ctrl.self))
        case CV4L2_VIDIOC_QUERYCTRL: return queryControl(argument.assumingMemoryBound(to: v4l2_queryctrl.self))
        case CV4L2_VIDIOC_QUERYMENU: return queryMenu(argument.assumingMemoryBound(to: v4l2_querymenu.self))
        case CV4L2_VIDIOC_G_CTRL: return getControl(argument.assumingMemoryBound(to: v4l2_control.self))
        case CV4L2_VIDIOC_S_CTRL: return setControl(argument.assumingMemoryBound(to: v4l2_control.self))
        case CV4L2_VIDIOC_G_EXT_CTRLS: return extendedControls(argument.assumingMemoryBound(to: v4l2_ext_controls.self), set: false)
        case CV4L2_VIDIOC_S_EXT_CTRLS: return extendedControls(argument.assumingMemoryBound(to: v4l2_ext_controls.self), set: true)
        default: return liveSourceIoctl(fd, request, argument)
        }
    }

    /// An enumeration that never ends (``SimulatedFault/endlessEnumeration(request:)``): an
    /// index past the last entry answers the first entry, with the index asked for. Every
    /// enumeration struct starts with its `__u32 index`.
    private func endlessEnumeration(_ request: UInt, _ argument: UnsafeMutableRawPointer) -> Errno? {
        func enumerate() -> Errno? {
            switch request {
            case CV4L2_VIDIOC_ENUMINPUT: return enumerateInput(argument.assumingMemoryBound(to: v4l2_input.self))
            case CV4L2_VIDIOC_ENUM_FMT: return enumerateFormat(argument.assumingMemoryBound(to: v4l2_fmtdesc.self))
            case CV4L2_VIDIOC_ENUM_FRAMESIZES: return enumerateFrameSize(argument.assumingMemoryBound(to: v4l2_frmsizeenum.self))
            case CV4L2_VIDIOC_ENUM_FRAMEINTERVALS: return enumerateFrameInterval(argument.assumingMemoryBound(to: v4l2_frmivalenum.self))
            default: return .inappropriateIOCTLForDevice
            }
        }
        let index = argument.load(as: UInt32.self)
        let answer = enumerate()
        guard answer == .invalidArgument, index > 0 else { return answer }
        argument.storeBytes(of: 0, as: UInt32.self)
        let again = enumerate()
        argument.storeBytes(of: index, as: UInt32.self)
        return again
    }

    /// The ioctls of the live HDMI input: ENOTTY unless the device has one (as before it had).
    private func liveSourceIoctl(_ fd: Int32, _ request: UInt, _ argument: UnsafeMutableRawPointer) -> Errno? {
        guard hasLiveHDMI else { return .inappropriateIOCTLForDevice }
        switch request {
        case CV4L2_VIDIOC_SUBSCRIBE_EVENT: return subscribeEvent(fd, argument.assumingMemoryBound(to: v4l2_event_subscription.self))
        case CV4L2_VIDIOC_UNSUBSCRIBE_EVENT: return unsubscribeEvent(fd, argument.assumingMemoryBound(to: v4l2_event_subscription.self))
        case CV4L2_VIDIOC_DQEVENT: return dequeueEvent(fd, argument.assumingMemoryBound(to: v4l2_event.self))
        case CV4L2_VIDIOC_QUERY_DV_TIMINGS: return queryDVTimings(argument.assumingMemoryBound(to: v4l2_dv_timings.self))
        case CV4L2_VIDIOC_G_DV_TIMINGS: return getDVTimings(argument.assumingMemoryBound(to: v4l2_dv_timings.self))
        case CV4L2_VIDIOC_S_DV_TIMINGS: return setDVTimings(argument.assumingMemoryBound(to: v4l2_dv_timings.self))
        default: return .inappropriateIOCTLForDevice
        }
    }

    /// videobuf2's `vb2_queue_is_busy`: another file handle owns the queue.
    @inline(__always)
    func isBusy(for fd: Int32) -> Bool { owner >= 0 && owner != fd }

    // MARK: - Capabilities and inputs

    func queryCapabilities(_ cap: UnsafeMutablePointer<v4l2_capability>) -> Errno? {
        SystemCalls.zero(cap)
        SystemCalls.copy(configuration.driver, into: &cap.pointee.driver)
        SystemCalls.copy(configuration.card, into: &cap.pointee.card)
        SystemCalls.copy(configuration.busInfo, into: &cap.pointee.bus_info)
        cap.pointee.version = configuration.driverVersion
        let node: UInt32
        switch (isCapture, isMultiplanar) {
        case (true, false): node = 0x0000_0001
        case (true, true): node = 0x0000_1000
        case (false, false): node = 0x0000_0002
        case (false, true): node = 0x0000_2000
        }
        let deviceCaps = node | 0x0400_0000 /* STREAMING */ | 0x0020_0000 /* EXT_PIX_FORMAT */
        cap.pointee.device_caps = deviceCaps
        cap.pointee.capabilities = deviceCaps | 0x8000_0000 /* DEVICE_CAPS */
        return nil
    }

    static let inputs: [(name: String, type: UInt32, std: UInt64, capabilities: UInt32)] = [
        ("Webcam 0", 2, 0, 0),
        ("TV 1", 1, 0x00ff_ffff, 0x4),       // V4L2_INPUT_TYPE_TUNER, V4L2_STD_ALL, V4L2_IN_CAP_STD
        ("S-Video 2", 2, 0x00ff_ffff, 0x4),
        ("HDMI 3", 2, 0, 0x2),               // V4L2_IN_CAP_DV_TIMINGS
    ]

    func enumerateInput(_ input: UnsafeMutablePointer<v4l2_input>) -> Errno? {
        guard isCapture else { return .inappropriateIOCTLForDevice }
        let index = Int(input.pointee.index)
        guard index < SimulatedDevice.inputs.count else { return .invalidArgument }
        let entry = SimulatedDevice.inputs[index]
        SystemCalls.zero(input)
        input.pointee.index = UInt32(index)
        SystemCalls.copy(entry.name, into: &input.pointee.name)
        input.pointee.type = entry.type
        input.pointee.std = entry.std
        input.pointee.capabilities = entry.capabilities
        if hasLiveHDMI && UInt32(index) == SimulatedDevice.hdmiInput && !hasSignal {
            input.pointee.status = UInt32(V4L2_IN_ST_NO_SIGNAL)
        }
        return nil
    }

    func selectInput(_ index: UInt32) -> Errno? {
        guard isCapture else { return .inappropriateIOCTLForDevice }
        guard Int(index) < SimulatedDevice.inputs.count else { return .invalidArgument }
        if index == input { return nil }
        if !buffers.isEmpty { return .resourceBusy }
        let leavesOrEntersLive = hasLiveHDMI && (index == SimulatedDevice.hdmiInput || input == SimulatedDevice.hdmiInput)
        input = index
        // vivid_update_format_cap: the live input's size is its timings', the webcam's one it offers.
        if leavesOrEntersLive {
            format = negotiate(fourcc: format.pixelFormat.fourcc.rawValue, width: format.width, height: format.height)
        }
        return nil
    }

    // MARK: - Formats

    func enumerateFormat(_ desc: UnsafeMutablePointer<v4l2_fmtdesc>) -> Errno? {
        guard desc.pointee.type == queueType else { return .invalidArgument }
        let index = Int(desc.pointee.index)
        guard index < pixelFormats.count else { return .invalidArgument }
        let format = pixelFormats[index]
        let type = desc.pointee.type
        SystemCalls.zero(desc)
        desc.pointee.index = UInt32(index)
        desc.pointee.type = type
        SystemCalls.copy(format.description, into: &desc.pointee.description)
        desc.pointee.pixelformat = format.fourcc.rawValue
        if format.isCompressed { desc.pointee.flags = 0x0001 } // V4L2_FMT_FLAG_COMPRESSED
        return nil
    }

    func enumerateFrameSize(_ size: UnsafeMutablePointer<v4l2_frmsizeenum>) -> Errno? {
        guard pixelFormats.contains(where: { $0.fourcc.rawValue == size.pointee.pixel_format }) else { return .invalidArgument }
        let index = Int(size.pointee.index)
        let pixelFormat = size.pointee.pixel_format
        switch configuration.frameSizes {
        case .discrete(let sizes):
            guard index < sizes.count else { return .invalidArgument }
            SystemCalls.zero(size)
            size.pointee.type = 1 // V4L2_FRMSIZE_TYPE_DISCRETE
            size.pointee.discrete.width = sizes[index].width
            size.pointee.discrete.height = sizes[index].height
        case let .stepwise(minWidth, maxWidth, stepWidth, minHeight, maxHeight, stepHeight):
            guard index == 0 else { return .invalidArgument }
            SystemCalls.zero(size)
            size.pointee.type = 3 // V4L2_FRMSIZE_TYPE_STEPWISE
            size.pointee.stepwise.min_width = minWidth
            size.pointee.stepwise.max_width = maxWidth
            size.pointee.stepwise.step_width = stepWidth
            size.pointee.stepwise.min_height = minHeight
            size.pointee.stepwise.max_height = maxHeight
            size.pointee.stepwise.step_height = stepHeight
        }
        size.pointee.index = UInt32(index)
        size.pointee.pixel_format = pixelFormat
        return nil
    }

    func enumerateFrameInterval(_ interval: UnsafeMutablePointer<v4l2_frmivalenum>) -> Errno? {
        guard pixelFormats.contains(where: { $0.fourcc.rawValue == interval.pointee.pixel_format }),
              configuration.frameSizes.contains(width: interval.pointee.width, height: interval.pointee.height)
        else { return .invalidArgument }
        let index = Int(interval.pointee.index)
        guard index < configuration.frameIntervals.count else { return .invalidArgument }
        let (pixelFormat, width, height) = (interval.pointee.pixel_format, interval.pointee.width, interval.pointee.height)
        SystemCalls.zero(interval)
        interval.pointee.index = UInt32(index)
        interval.pointee.pixel_format = pixelFormat
        interval.pointee.width = width
        interval.pointee.height = height
        interval.pointee.type = 1 // V4L2_FRMIVAL_TYPE_DISCRETE
        interval.pointee.discrete.numerator = configuration.frameIntervals[index].numerator
        interval.pointee.discrete.denominator = configuration.frameIntervals[index].denominator
        return nil
    }

    func getFormat(_ raw: UnsafeMutablePointer<v4l2_format>) -> Errno? {
        guard raw.pointee.type == queueType else { return .invalidArgument }
        write(format, to: raw)
        return nil
    }

    func setFormat(_ raw: UnsafeMutablePointer<v4l2_format>, commit: Bool) -> Errno? {
        guard raw.pointee.type == queueType else { return .invalidArgument }
        let chosen: SimulatedFormat
        if isMultiplanar {
            let mp = raw.pointee.fmt.pix_mp
            chosen = negotiate(fourcc: mp.pixelformat, width: mp.width, height: mp.height)
        } else {
            let pix = raw.pointee.fmt.pix
            chosen = negotiate(fourcc: pix.pixelformat, width: pix.width, height: pix.height)
        }
        if commit && !buffers.isEmpty { return .resourceBusy }
        write(chosen, to: raw)
        if commit { format = chosen }
        return nil
    }

    func write(_ format: SimulatedFormat, to raw: UnsafeMutablePointer<v4l2_format>) {
        withUnsafeMutableBytes(of: &raw.pointee.fmt) { bytes in
            for i in bytes.indices { bytes[i] = 0 }
        }
        if isMultiplanar {
            raw.pointee.fmt.pix_mp.width = format.width
            raw.pointee.fmt.pix_mp.height = format.height
            raw.pointee.fmt.pix_mp.pixelformat = format.pixelFormat.fourcc.rawValue
            raw.pointee.fmt.pix_mp.field = SimulatedDevice.fieldNone
            raw.pointee.fmt.pix_mp.colorspace = SimulatedDevice.colorspaceSRGB
            raw.pointee.fmt.pix_mp.num_planes = UInt8(format.planes.count)
            withUnsafeMutableBytes(of: &raw.pointee.fmt.pix_mp.plane_fmt) { bytes in
                let planes = bytes.bindMemory(to: v4l2_plane_pix_format.self)
                for (p, plane) in format.planes.enumerated() {
                    planes[p].bytesperline = plane.bytesPerLine
                    planes[p].sizeimage = plane.sizeImage
                }
            }
        } else {
            raw.pointee.fmt.pix.width = format.width
            raw.pointee.fmt.pix.height = format.height
            raw.pointee.fmt.pix.pixelformat = format.pixelFormat.fourcc.rawValue
            raw.pointee.fmt.pix.field = SimulatedDevice.fieldNone
            raw.pointee.fmt.pix.bytesperline = format.planes[0].bytesPerLine
            raw.pointee.fmt.pix.sizeimage = format.planes[0].sizeImage
            raw.pointee.fmt.pix.colorspace = SimulatedDevice.colorspaceSRGB
            raw.pointee.fmt.pix.priv = 0xfeed_cafe // V4L2_PIX_FMT_PRIV_MAGIC
        }
    }

    func streamParameters(_ parm: UnsafeMutablePointer<v4l2_streamparm>, set: Bool) -> Errno? {
        guard parm.pointee.type == queueType else { return .invalidArgument }
        if set {
            let requested = parm.pointee.parm.capture.timeperframe
            let intervals = configuration.frameIntervals
            if requested.numerator == 0 || requested.denominator == 0 {
                timePerFrame = intervals.first ?? Fraction(1, 30)
            } else {
                let wanted = Double(requested.numerator) / Double(requested.denominator)
                timePerFrame = intervals.min { abs($0.value - wanted) < abs($1.value - wanted) } ?? timePerFrame
            }
        }
        withUnsafeMutableBytes(of: &parm.pointee.parm) { bytes in
            for i in bytes.indices { bytes[i] = 0 }
        }
        // v4l2_captureparm and v4l2_outputparm have the same layout up to `timeperframe`.
        parm.pointee.parm.capture.capability = 0x1000 // V4L2_CAP_TIMEPERFRAME
        parm.pointee.parm.capture.timeperframe.numerator = timePerFrame.numerator
        parm.pointee.parm.capture.timeperframe.denominator = timePerFrame.denominator
        return nil
    }

    // MARK: - Controls

    static let nextControl: UInt32 = 0x8000_0000
    static let nextCompound: UInt32 = 0x4000_0000
    static let whichDefault: UInt32 = 0x0f00_0000
    static let whichRequest: UInt32 = 0x0f01_0000

    /// The control `id` names, or with the NEXT flags, the first control after it.
    func findControl(_ id: UInt32) -> Int? {
        if id & (SimulatedDevice.nextControl | SimulatedDevice.nextCompound) != 0 {
            let base = id & ~(SimulatedDevice.nextControl | SimulatedDevice.nextCompound)
            return controls.indices.first { controls[$0].id > base }
        }
        return controls.indices.first { controls[$0].id == id }
    }

    func currentValue(_ index: Int) -> Int64 {
        if controls[index].id == ControlID.minimumBuffersForCapture { return Int64(minimumBuffers) }
        return controls[index].value
    }

    func queryExtendedControl(_ query: UnsafeMutablePointer<v4l2_query_ext_ctrl>) -> Errno? {
        guard let index = findControl(query.pointee.id) else { return .invalidArgument }
        let control = controls[index]
        SystemCalls.zero(query)
        query.pointee.id = control.id
        query.pointee.type = control.type.rawValue
        SystemCalls.copy(control.name, into: &query.pointee.name)
        query.pointee.minimum = control.minimum
        query.pointee.maximum = control.maximum
        query.pointee.step = control.step
        query.pointee.default_value = control.defaultValue
        query.pointee.flags = control.flags
        query.pointee.elem_size = control.elementSize
        query.pointee.elems = 1
        return nil
    }

    func queryControl(_ query: UnsafeMutablePointer<v4l2_queryctrl>) -> Errno? {
        guard let index = findControl(query.pointee.id) else { return .invalidArgument }
        let control = controls[index]
        SystemCalls.zero(query)
        query.pointee.id = control.id
        query.pointee.type = control.type.rawValue
        SystemCalls.copy(control.name, into: &query.pointee.name)
        switch control.type {
        case .integer, .boolean, .menu, .integerMenu, .bitmask:
            query.pointee.minimum = Int32(truncatingIfNeeded: control.minimum)
            query.pointee.maximum = Int32(truncatingIfNeeded: control.maximum)
            query.pointee.step = Int32(truncatingIfNeeded: control.step)
            query.pointee.default_value = Int32(truncatingIfNeeded: control.defaultValue)
        default:
            break
        }
        query.pointee.flags = control.flags
        return nil
    }

    func queryMenu(_ menu: UnsafeMutablePointer<v4l2_querymenu>) -> Errno? {
        guard let index = controls.firstIndex(where: { $0.id == menu.pointee.id }) else { return .invalidArgument }
        let control = controls[index]
        guard control.type == .menu || control.type == .integerMenu else { return .invalidArgument }
        let item = Int64(menu.pointee.index)
        guard item >= control.minimum, item <= control.maximum,
              let name = control.menu[Int(item - control.minimum)] else { return .invalidArgument }
        let (id, itemIndex) = (menu.pointee.id, menu.pointee.index)
        SystemCalls.zero(menu)
        menu.pointee.id = id
        menu.pointee.index = itemIndex
        SystemCalls.copy(name, into: &menu.pointee.name)
        return nil
    }

    /// The control VIDIOC_G_CTRL / VIDIOC_S_CTRL may reach: it exists (else EINVAL), fits the
    /// 32-bit ioctl (not a 64-bit integer or a class, else EINVAL), and lacks `forbiddenFlag`
    /// (write-only for G_CTRL, read-only for S_CTRL; else EACCES).
    private func legacyControlIndex(_ id: UInt32, forbiddenFlag: UInt32) -> Result<Int, Errno> {
        guard let index = controls.firstIndex(where: { $0.id == id }) else { return .failure(.invalidArgument) }
        let type = controls[index].type
        guard type != .integer64, type != .controlClass else { return .failure(.invalidArgument) }
        guard controls[index].flags & forbiddenFlag == 0 else { return .failure(.permissionDenied) }
        return .success(index)
    }

    func getControl(_ control: UnsafeMutablePointer<v4l2_control>) -> Errno? {
        let index: Int
        switch legacyControlIndex(control.pointee.id, forbiddenFlag: SimulatedControl.flagWriteOnly) {
        case .success(let found): index = found
        case .failure(let errno): return errno
        }
        control.pointee.value = Int32(truncatingIfNeeded: currentValue(index))
        return nil
    }

    func setControl(_ control: UnsafeMutablePointer<v4l2_control>) -> Errno? {
        let index: Int
        switch legacyControlIndex(control.pointee.id, forbiddenFlag: SimulatedControl.flagReadOnly) {
        case .success(let found): index = found
        case .failure(let errno): return errno
        }
        switch controls[index].validate(Int64(control.pointee.value)) {
        case .success(let value):
            apply(value, to: index)
            control.pointee.value = Int32(truncatingIfNeeded: value)
            return nil
        case .failure(let errno):
            return errno
        }
    }

    func apply(_ value: Int64, to index: Int) {
        if controls[index].type == .button {
            controls[index].presses += 1
        } else {
            controls[index].value = value
        }
    }

    /// G/S_EXT_CTRLS, with the kernel's checks: unknown ids and controls of another class
    /// are EINVAL (error_idx at the control), read-only controls on set and write-only ones
    /// on get are EACCES, values are validated like the kernel's std_validate (integers
    /// clamped, menus ERANGE/EINVAL; a validation failure on set has error_idx = count).
    func extendedControls(_ set: UnsafeMutablePointer<v4l2_ext_controls>, set isSet: Bool) -> Errno? {
        let which = set.pointee.which
        let count = Int(set.pointee.count)
        let isClass = which != 0 && which != SimulatedDevice.whichDefault && which != SimulatedDevice.whichRequest
        if which == SimulatedDevice.whichRequest { return .invalidArgument }
        if isSet && which == SimulatedDevice.whichDefault { return .invalidArgument }
        if isClass && (which & 0xffff != 0 || !controls.contains(where: { $0.controlClass == which })) {
            return .invalidArgument
        }
        if count == 0 { return nil }
        guard count <= 1024 else { return .invalidArgument }
        guard let list = set.pointee.controls else { return .badAddress }
        set.pointee.error_idx = UInt32(count)
        // Find every control first.
        for i in 0..<count {
            let id = list[i].id
            guard let index = controls.firstIndex(where: { $0.id == id }),
                  !isClass || controls[index].controlClass == which else {
                set.pointee.error_idx = UInt32(i)
                return .invalidArgument
            }
            if !isSet && controls[index].flags & SimulatedControl.flagWriteOnly != 0 {
                set.pointee.error_idx = UInt32(i)
                return .permissionDenied
            }
        }
        if !isSet {
            for i in 0..<count {
                let index = controls.firstIndex { $0.id == list[i].id }!
                let value = which == SimulatedDevice.whichDefault ? controls[index].defaultValue : currentValue(index)
                if controls[index].type == .integer64 {
                    list[i].value64 = value
                } else {
                    list[i].value = Int32(truncatingIfNeeded: value)
                }
            }
            return nil
        }
        // Validate all, then apply all.
        for i in 0..<count {
            let index = controls.firstIndex { $0.id == list[i].id }!
            if controls[index].flags & SimulatedControl.flagReadOnly != 0 {
                set.pointee.error_idx = UInt32(count)
                return .permissionDenied
            }
            let requested = controls[index].type == .integer64 ? list[i].value64 : Int64(list[i].value)
            switch controls[index].validate(requested) {
            case .success(let value):
                if controls[index].type == .integer64 {
                    list[i].value64 = value
                } else {
                    list[i].value = Int32(truncatingIfNeeded: value)
                }
            case .failure(let errno):
                set.pointee.error_idx = UInt32(count)
                return errno
            }
        }
        for i in 0..<count {
            let index = controls.firstIndex { $0.id == list[i].id }!
            apply(controls[index].type == .integer64 ? list[i].value64 : Int64(list[i].value), to: index)
        }
        return nil
    }
}
