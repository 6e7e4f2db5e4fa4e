import SystemPackage
import CV4L2
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// The buffer ioctls, after videobuf2 (`vb2_ioctl_*`, `vb2_core_*`).
extension SimulatedDevice {
    func supports(memory: UInt32) -> Bool {
        switch memory {
        case MemoryKind.mmap.rawValue: return bufferCapabilities & 0x1 != 0
        case MemoryKind.userPointer.rawValue: return bufferCapabilities & 0x2 != 0
        case MemoryKind.dmabuf.rawValue: return bufferCapabilities & 0x4 != 0
        default: return false
        }
    }

    /// `vb2_verify_memory_type`.
    func verify(memory: UInt32, type: UInt32) -> Errno? {
        guard type == queueType, supports(memory: memory) else { return .invalidArgument }
        return nil
    }

    // MARK: - REQBUFS, CREATE_BUFS

    func requestBuffers(_ fd: Int32, _ request: UnsafeMutablePointer<v4l2_requestbuffers>, registry: SimulatedRegistry) -> Errno? {
        request.pointee.capabilities = bufferCapabilities
        request.pointee.flags = 0
        if let errno = verify(memory: request.pointee.memory, type: request.pointee.type) { return errno }
        if isBusy(for: fd) { return .resourceBusy }
        if streaming { return .resourceBusy }
        let count = Int(request.pointee.count)
        if count == 0 || !buffers.isEmpty || (memory != 0 && memory != request.pointee.memory) {
            freeBuffers(registry: registry)
            if count == 0 {
                owner = -1
                return nil
            }
        }
        let wanted = min(max(count, minimumBuffers), maximumBuffers)
        switch allocate(count: wanted, sizes: format.planes.map(\.sizeImage), memory: request.pointee.memory, registry: registry) {
        case .success(let made):
            request.pointee.count = UInt32(made)
            owner = fd
            return nil
        case .failure(let errno):
            return errno
        }
    }

    func createBuffers(_ fd: Int32, _ create: UnsafeMutablePointer<v4l2_create_buffers>, registry: SimulatedRegistry) -> Errno? {
        create.pointee.capabilities = bufferCapabilities
        create.pointee.flags = 0
        create.pointee.index = UInt32(buffers.count)
        let verified = verify(memory: create.pointee.memory, type: create.pointee.format.type)
        if create.pointee.count == 0 { return verified }
        if let verified { return verified }
        if isBusy(for: fd) { return .resourceBusy }
        // The plane sizes asked for.
        var sizes: [UInt32] = []
        if isMultiplanar {
            let planeCount = Int(create.pointee.format.fmt.pix_mp.num_planes)
            guard planeCount >= 1, planeCount <= maximumPlaneCount else { return .invalidArgument }
            withUnsafeBytes(of: create.pointee.format.fmt.pix_mp.plane_fmt) { bytes in
                let planes = bytes.bindMemory(to: v4l2_plane_pix_format.self)
                for p in 0..<planeCount { sizes.append(planes[p].sizeimage) }
            }
        } else {
            sizes = [create.pointee.format.fmt.pix.sizeimage]
        }
        if sizes.contains(0) { return .invalidArgument }
        if !buffers.isEmpty && memory != create.pointee.memory { return .invalidArgument }
        if buffers.count >= maximumBuffers { return Errno(rawValue: ENOBUFS) }
        // The driver's queue_setup: the planes of the current format, each at least its size.
        guard sizes.count == format.planes.count else { return .invalidArgument }
        for (size, plane) in zip(sizes, format.planes) where size < plane.sizeImage { return .invalidArgument }
        let wanted = min(Int(create.pointee.count), maximumBuffers - buffers.count)
        switch allocate(count: wanted, sizes: sizes, memory: create.pointee.memory, registry: registry) {
        case .success(let made):
            create.pointee.count = UInt32(made)
            owner = fd
            return nil
        case .failure(let errno):
            return errno
        }
    }

    // MARK: - QUERYBUF, QBUF, DQBUF

    /// `__verify_planes_array`: a multi-planar call needs a planes array big enough.
    @inline(__always)
    func verifyPlanes(_ raw: UnsafeMutablePointer<v4l2_buffer>, index: Int) -> Errno? {
        guard isMultiplanar else { return nil }
        guard raw.pointee.m.planes != nil,
              Int(raw.pointee.length) >= buffers[index].planes.count,
              Int(raw.pointee.length) <= maximumPlaneCount else { return .invalidArgument }
        return nil
    }

    func queryBuffer(_ raw: UnsafeMutablePointer<v4l2_buffer>) -> Errno? {
        guard raw.pointee.type == queueType else { return .invalidArgument }
        let index = Int(raw.pointee.index)
        guard index < buffers.count else { return .invalidArgument }
        if let errno = verifyPlanes(raw, index: index) { return errno }
        write(buffer: index, to: raw)
        return nil
    }

    func queueBuffer(_ fd: Int32, _ raw: UnsafeMutablePointer<v4l2_buffer>, registry: SimulatedRegistry) -> Errno? {
        if isBusy(for: fd) { return .resourceBusy }
        guard raw.pointee.type == queueType else { return .invalidArgument }
        let index = Int(raw.pointee.index)
        guard index < buffers.count else { return .invalidArgument }
        guard raw.pointee.memory == memory else { return .invalidArgument }
        if let errno = verifyPlanes(raw, index: index) { return errno }
        if fatal { return .ioError }
        guard buffers[index].state == .dequeued else { return .invalidArgument }

        let planeCount = buffers[index].planes.count
        switch memory {
        case MemoryKind.userPointer.rawValue:
            // Check every plane before changing anything.
            for p in 0..<planeCount {
                let (pointer, length) = userMemory(raw, plane: p)
                if length < buffers[index].planes[p].minimumLength { return .invalidArgument }
                if pointer == 0 { return .badAddress }
            }
            for p in 0..<planeCount {
                let (pointer, length) = userMemory(raw, plane: p)
                buffers[index].planes[p].userPointer = pointer
                buffers[index].planes[p].length = length
            }
        case MemoryKind.dmabuf.rawValue:
            for p in 0..<planeCount {
                let (descriptor, length) = dmabuf(raw, plane: p)
                guard registry.device(for: descriptor) == nil, let file = SystemCalls.fileInfo(descriptor) else {
                    return .invalidArgument
                }
                let used = length == 0 ? UInt32(clamping: file.size) : length
                if used < buffers[index].planes[p].minimumLength || file.size < Int(used) { return .invalidArgument }
            }
            for p in 0..<planeCount {
                let (descriptor, length) = dmabuf(raw, plane: p)
                if let errno = attach(descriptor: descriptor, length: length, buffer: index, plane: p, registry: registry) {
                    return errno
                }
            }
        default:
            break
        }
        for p in 0..<planeCount {
            if isCapture {
                buffers[index].planes[p].bytesUsed = 0
            } else {
                let used = isMultiplanar ? raw.pointee.m.planes![p].bytesused : raw.pointee.bytesused
                buffers[index].planes[p].bytesUsed = used == 0 ? buffers[index].planes[p].length : used
            }
        }
        buffers[index].state = .queued
        buffers[index].hasError = false
        queued.append(index)
        if streaming && !started && queued.count >= minimumBuffers { started = true }
        write(buffer: index, to: raw)
        return nil
    }

    @inline(__always)
    func userMemory(_ raw: UnsafeMutablePointer<v4l2_buffer>, plane: Int) -> (UInt, UInt32) {
        if isMultiplanar {
            let planes = raw.pointee.m.planes!
            return (planes[plane].m.userptr, planes[plane].length)
        }
        return (raw.pointee.m.userptr, raw.pointee.length)
    }

    @inline(__always)
    func dmabuf(_ raw: UnsafeMutablePointer<v4l2_buffer>, plane: Int) -> (Int32, UInt32) {
        if isMultiplanar {
            let planes = raw.pointee.m.planes!
            return (planes[plane].m.fd, planes[plane].length)
        }
        return (raw.pointee.m.fd, raw.pointee.length)
    }

    /// Attaches a dmabuf to a plane: maps it (once per file, like videobuf2 keeps an
    /// attachment while the same dmabuf is queued again).
    func attach(descriptor: Int32, length: UInt32, buffer index: Int, plane p: Int, registry: SimulatedRegistry) -> Errno? {
        guard let file = SystemCalls.fileInfo(descriptor) else { return .invalidArgument }
        let used = length == 0 ? UInt32(clamping: file.size) : length
        let current = buffers[index].planes[p]
        if current.dmabufMapping != nil, current.dmabufDevice == file.device, current.dmabufInode == file.inode,
           current.dmabufMappingLength >= Int(used) {
            buffers[index].planes[p].dmabufDescriptor = descriptor
            buffers[index].planes[p].length = used
            return nil
        }
        switch SystemCalls.map(descriptor, length: Int(used), protection: PROT_READ | PROT_WRITE) {
        case .success(let address):
            if let old = current.dmabufMapping {
                Glibc.munmap(old, current.dmabufMappingLength)
                registry.internalMappings -= 1
            }
            registry.internalMappings += 1
            buffers[index].planes[p].dmabufMapping = address
            buffers[index].planes[p].dmabufMappingLength = Int(used)
            buffers[index].planes[p].dmabufDevice = file.device
            buffers[index].planes[p].dmabufInode = file.inode
            buffers[index].planes[p].dmabufDescriptor = descriptor
            buffers[index].planes[p].length = used
            return nil
        case .failure:
            return .invalidArgument
        }
    }

    func dequeueBuffer(_ fd: Int32, _ raw: UnsafeMutablePointer<v4l2_buffer>) -> Errno? {
        if isBusy(for: fd) { return .resourceBusy }
        guard raw.pointee.type == queueType else { return .invalidArgument }
        // __vb2_wait_for_done_vb, non-blocking.
        if !streaming { return .invalidArgument }
        if fatal { return .ioError }
        if !faults.isEmpty && takeWouldBlock() { return .resourceTemporarilyUnavailable }
        if done.isEmpty && producesOnDemand { produceFrame() }
        if done.isEmpty { return .resourceTemporarilyUnavailable }
        let index = done[0]
        if let errno = verifyPlanes(raw, index: index) { return errno }
        _ = done.removeFirst()
        write(buffer: index, to: raw) // filled while still done, so the flags say DONE
        buffers[index].state = .dequeued
        if !faults.isEmpty, let (fault, reported) = takeResultFault(dequeuedIndex: index) {
            switch fault {
            case .outOfRangeIndex, .indexNotQueued:
                raw.pointee.index = UInt32(reported)
            case .bytesUsedOverLength:
                if isMultiplanar {
                    raw.pointee.m.planes![0].bytesused = raw.pointee.m.planes![0].length + 1
                } else {
                    raw.pointee.bytesused = raw.pointee.length + 1
                }
            case .bytesUsedZero:
                if isMultiplanar {
                    raw.pointee.m.planes![0].bytesused = 0
                } else {
                    raw.pointee.bytesused = 0
                }
            case .dataOffsetNotBelowBytesUsed:
                raw.pointee.m.planes![0].data_offset = raw.pointee.m.planes![0].bytesused
            case .shortPayload(let bytes):
                if isMultiplanar {
                    raw.pointee.m.planes![0].bytesused -= min(bytes, raw.pointee.m.planes![0].bytesused)
                } else {
                    raw.pointee.bytesused -= min(bytes, raw.pointee.bytesused)
                }
            default:
                break
            }
        }
        lastDequeuedIndex = index
        return nil
    }

    /// `__fill_v4l2_buffer`: what QUERYBUF, QBUF and DQBUF return.
    func write(buffer index: Int, to raw: UnsafeMutablePointer<v4l2_buffer>) {
        var flags = SimulatedDevice.timestampMonotonic
        switch buffers[index].state {
        case .queued: flags |= 0x0000_0002 // QUEUED
        case .done: flags |= buffers[index].hasError ? 0x0000_0044 : 0x0000_0004 // (ERROR |) DONE
        case .dequeued: break
        }
        if buffers[index].mappings > 0 { flags |= 0x0000_0001 } // MAPPED
        raw.pointee.index = UInt32(index)
        raw.pointee.type = queueType
        raw.pointee.memory = memory
        raw.pointee.flags = flags
        raw.pointee.field = buffers[index].field
        let nanoseconds = buffers[index].timestampNanoseconds
        raw.pointee.timestamp.tv_sec = Int(nanoseconds / 1_000_000_000)
        raw.pointee.timestamp.tv_usec = Int(nanoseconds % 1_000_000_000 / 1000)
        SystemCalls.zero(&raw.pointee.timecode)
        raw.pointee.sequence = buffers[index].sequence
        raw.pointee.reserved2 = 0
        raw.pointee.request_fd = 0
        let planeCount = buffers[index].planes.count
        if isMultiplanar {
            let planes = raw.pointee.m.planes!
            for p in 0..<planeCount {
                var plane = v4l2_plane()
                let source = buffers[index].planes[p]
                plane.bytesused = source.bytesUsed
                plane.length = source.length
                switch memory {
                case MemoryKind.mmap.rawValue: plane.m.mem_offset = source.mapOffset
                case MemoryKind.userPointer.rawValue: plane.m.userptr = source.userPointer
                case MemoryKind.dmabuf.rawValue: plane.m.fd = source.dmabufDescriptor
                default: break
                }
                plane.data_offset = source.dataOffset
                planes[p] = plane
            }
            raw.pointee.length = UInt32(planeCount)
            raw.pointee.bytesused = 0
        } else {
            let source = buffers[index].planes[0]
            raw.pointee.bytesused = source.bytesUsed
            raw.pointee.length = source.length
            switch memory {
            case MemoryKind.mmap.rawValue: raw.pointee.m.offset = source.mapOffset
            case MemoryKind.userPointer.rawValue: raw.pointee.m.userptr = source.userPointer
            case MemoryKind.dmabuf.rawValue: raw.pointee.m.fd = source.dmabufDescriptor
            default: break
            }
        }
    }

    // MARK: - EXPBUF, STREAMON, STREAMOFF

    func exportBuffer(_ fd: Int32, _ export: UnsafeMutablePointer<v4l2_exportbuffer>) -> Errno? {
        if isBusy(for: fd) { return .resourceBusy }
        guard export.pointee.type == queueType, memory == MemoryKind.mmap.rawValue else { return .invalidArgument }
        let index = Int(export.pointee.index)
        let plane = Int(export.pointee.plane)
        guard index < buffers.count, plane < buffers[index].planes.count else { return .invalidArgument }
        let flags = Int32(bitPattern: export.pointee.flags)
        guard flags & ~(O_CLOEXEC | O_ACCMODE) == 0 else { return .invalidArgument }
        // A new open file description of the plane's memfd, with the access mode asked for.
        let memfd = buffers[index].planes[plane].memfd
        var exported = Glibc.open("/proc/self/fd/\(memfd)", flags & (O_ACCMODE | O_CLOEXEC))
        if exported < 0 {
            exported = fcntl(memfd, flags & O_CLOEXEC != 0 ? F_DUPFD_CLOEXEC : F_DUPFD, 0)
        }
        guard exported >= 0 else { return .current }
        export.pointee.fd = exported
        return nil
    }

    func streamOn(_ fd: Int32, _ type: UInt32) -> Errno? {
        if isBusy(for: fd) { return .resourceBusy }
        guard type == queueType else { return .invalidArgument }
        if streaming { return nil }
        if buffers.isEmpty { return .invalidArgument }
        if buffers.count < minimumBuffers { return .invalidArgument }
        streaming = true
        nextSequence = 0
        // videobuf2 defers start_streaming until min_queued_buffers are queued.
        started = queued.count >= minimumBuffers
        return nil
    }

    func streamOff(_ fd: Int32, _ type: UInt32) -> Errno? {
        if isBusy(for: fd) { return .resourceBusy }
        guard type == queueType else { return .invalidArgument }
        cancel()
        return nil
    }
}
