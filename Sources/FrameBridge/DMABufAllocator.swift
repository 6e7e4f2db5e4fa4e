import SystemPackage
import CV4L2
import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// A source of dmabuf file descriptors for ``DMABufAllocator``.
public protocol DMABufExporter: AnyObject, Sendable {
    /// A name for reports, e.g. `v4l2 /dev/video1` or `vgem /dev/dri/card0`.
    var name: String { get }
    /// Creates `count` buffers with one dmabuf per plane, each at least `planeSizes[p]` bytes.
    /// Returns, per buffer, per plane, the fd and its size. The exporter keeps ownership of
    /// what it needs to release them in ``release()``; the fds it returns are the caller's to close.
    /// When it throws, it has closed every descriptor it made (the planes of a half-made buffer too).
    func export(count: Int, planeSizes: [Int]) throws(CaptureError) -> [[(fd: Int32, size: Int)]]
    /// Releases everything the exporter created.
    func release()
}

/// A vendor allocator that imports dmabufs from an exporter (V4L2 DMABUF): another V4L2
/// device's MMAP buffers (``V4L2BufferExporter``) or DRM dumb buffers (``DRMDumbBufferExporter``).
///
/// Its frames are device memory: selection chooses it only for a consumer that declares it
/// accepts device memory. The CPU can still read a frame: allocate maps each dmabuf, and
/// locking a frame brackets the read with DMA_BUF_IOCTL_SYNC.
public final class DMABufAllocator: AllocatorDispatch {
    private struct State {
        var queue: PinQueue?
        /// The exporter's dmabufs, owned from initialize to delete (closed there, once).
        var exported: [[(fd: FileDescriptor, size: Int)]] = []
    }
    private let state = Locked(State())
    public let exporter: any DMABufExporter
    private let requestedSizes: [Int]?

    public init(exporter: any DMABufExporter, planeSizes: [Int]? = nil) {
        self.exporter = exporter
        requestedSizes = planeSizes
    }

    public var name: String { "dmabuf (\(exporter.name))" }
    public var offer: AllocatorOffer {
        AllocatorOffer(memoryKind: .dmabuf, planeSizes: requestedSizes, alignment: pageSize, cpuAccessible: true, deviceMemory: true)
    }

    public func initialize(queue: PinQueue, framing: AllocatorFraming, frameCount: Int) throws(CaptureError) -> Int {
        let granted: RequestedBuffers
        do {
            granted = try queue.device.requestBuffers(count: UInt32(frameCount), bufferType: queue.bufferType, memory: .dmabuf)
        } catch {
            throw CaptureError(error)
        }
        guard granted.count > 0 else {
            throw CaptureError(.allocator, "\(queue.device.path): VIDIOC_REQBUFS granted no dmabuf buffers (asked for \(frameCount))")
        }
        let exported: [[(fd: Int32, size: Int)]]
        do {
            exported = try exporter.export(count: Int(granted.count), planeSizes: requestedSizes ?? framing.planeSizes)
        } catch {
            _ = try? queue.device.requestBuffers(count: 0, bufferType: queue.bufferType, memory: .dmabuf)
            throw error
        }
        let owned = exported.map { $0.map { (fd: FileDescriptor(rawValue: $0.fd), size: $0.size) } }
        state.withLock {
            $0.queue = queue
            $0.exported = owned
        }
        return owned.count
    }

    public func allocate(index: Int) throws(CaptureError) -> FrameMemory {
        let buffer = state.withLock { $0.exported.indices.contains(index) ? $0.exported[index] : nil }
        guard let buffer else {
            throw CaptureError(.allocator, "\(name): no exported buffer \(index)")
        }
        var planes: [PlaneMemory] = []
        for plane in buffer {
            let address = mmap(nil, plane.size, PROT_READ | PROT_WRITE, MAP_SHARED, plane.fd.rawValue, 0)
            guard let address, address != cv4l2_map_failed() else {
                let errno = Errno.current
                for mapped in planes { munmap(mapped.address, mapped.length) }
                throw CaptureError(.allocator, "\(name): mmap of dmabuf fd \(plane.fd.rawValue) (\(plane.size) bytes) failed: \(errno)")
            }
            planes.append(PlaneMemory(address: address, length: plane.size, fd: plane.fd.rawValue))
        }
        return FrameMemory(planes: planes)
    }

    public func free(index: Int, memory: FrameMemory) {
        for i in 0..<memory.planeCount {
            let plane = memory.planes[i]
            if let address = plane.address { munmap(address, plane.length) }
        }
    }

    public func delete() {
        let (queue, exported) = state.withLock { state in
            defer {
                state.queue = nil
                state.exported = []
            }
            return (state.queue, state.exported)
        }
        if let queue {
            _ = try? queue.device.requestBuffers(count: 0, bufferType: queue.bufferType, memory: .dmabuf)
        }
        for buffer in exported {
            for plane in buffer { try? plane.fd.close() }
        }
        exporter.release()
    }

    public func beginCPUAccess(index: Int, memory: FrameMemory) throws(CaptureError) {
        try synchronize(memory, [.read, .start])
    }

    public func endCPUAccess(index: Int, memory: FrameMemory) throws(CaptureError) {
        try synchronize(memory, [.read, .end])
    }

    private func synchronize(_ memory: FrameMemory, _ flags: DMABufSyncFlags) throws(CaptureError) {
        let backend: any DeviceBackend = state.withLock { $0.queue?.device.backend } ?? KernelBackend.shared
        for i in 0..<memory.planeCount {
            do throws(V4L2Error) {
                try backend.synchronizeDMABuf(memory.planes[i].fd, flags)
            } catch {
                throw CaptureError(.allocator, "\(name): plane \(i): \(error)", underlying: error)
            }
        }
    }
}

/// Exports the MMAP buffers of another V4L2 device (VIDIOC_EXPBUF) as dmabufs, the
/// "common DMA buffer between two devices" case.
public final class V4L2BufferExporter: DMABufExporter {
    private struct State {
        var device: VideoDevice?
        var bufferType: BufferType = .videoCapture
    }
    private let state = Locked(State())
    public let path: String
    private let backend: any DeviceBackend
    private let template: ImageFormat?

    /// - Parameters:
    ///   - path: the exporting device, e.g. `/dev/video1`.
    ///   - format: the format to set on it so its buffers are large enough; nil keeps its format
    ///     and relies on the plane sizes check.
    ///   - backend: the system calls to open and export it with (the kernel's by default, or a
    ///     simulator).
    public init(path: String, format: ImageFormat? = nil, backend: any DeviceBackend = KernelBackend.shared) {
        self.path = path
        self.template = format
        self.backend = backend
    }

    public var name: String { "v4l2 \(path)" }

    public func export(count: Int, planeSizes: [Int]) throws(CaptureError) -> [[(fd: Int32, size: Int)]] {
        let device: VideoDevice
        do {
            device = try VideoDevice(path: path, backend: backend)
        } catch {
            throw CaptureError(.allocator, "dmabuf exporter: \(error)", underlying: error)
        }
        guard let bufferType = device.capabilities.captureBufferType else {
            throw CaptureError(.allocator, "dmabuf exporter \(path): not a capture device, cannot export buffers")
        }
        do throws(V4L2Error) {
            if let template {
                var format = template
                format.bufferType = bufferType
                if !bufferType.isMultiplanar { format.planes = Array(format.planes.prefix(1)) }
                try device.setFormat(format)
            }
        } catch {
            throw CaptureError(.allocator, "dmabuf exporter: \(error)", underlying: error)
        }
        let path = self.path
        let buffers = try exportMMAPBuffers(
            of: device, bufferType: bufferType, count: count, planeSizes: planeSizes,
            failed: { CaptureError(.allocator, "dmabuf exporter: \($0)", underlying: $0) },
            tooSmall: { CaptureError(.allocator, "dmabuf exporter \(path): its buffers (\($0) bytes) are smaller than the frames need (\(planeSizes) bytes); set the same format on it") })
        state.withLock {
            $0.device = device
            $0.bufferType = bufferType
        }
        return buffers
    }

    public func release() {
        let (device, bufferType) = state.withLock { state in
            defer { state.device = nil }
            return (state.device, state.bufferType)
        }
        if let device {
            _ = try? device.requestBuffers(count: 0, bufferType: bufferType, memory: .mmap)
        }
    }
}

/// VIDIOC_REQBUFS(`count`, MMAP) on `bufferType` of `device`, then VIDIOC_EXPBUF of every plane
/// of every buffer granted: per buffer, per plane, the dmabuf and its size. Each buffer must hold
/// `planeSizes` (one dmabuf per plane for a multi-planar importer). Every dmabuf made is owned here
/// until it is returned: whatever step fails, all are closed (the planes of a half-made buffer
/// too) and the buffers freed (REQBUFS 0) before `failed` or `tooSmall` is thrown.
func exportMMAPBuffers(of device: VideoDevice, bufferType: BufferType, count: Int, planeSizes: [Int],
                       failed: (V4L2Error) -> CaptureError, tooSmall: ([Int]) -> CaptureError) throws(CaptureError) -> [[(fd: Int32, size: Int)]] {
    var made: [FileDescriptor] = []
    var buffers: [[(fd: Int32, size: Int)]] = []
    var handedOver = false
    defer {
        if !handedOver {
            for fd in made { try? fd.close() }
            _ = try? device.requestBuffers(count: 0, bufferType: bufferType, memory: .mmap)
        }
    }
    do throws(V4L2Error) {
        let granted = try device.requestBuffers(count: UInt32(count), bufferType: bufferType, memory: .mmap)
        for index in 0..<Int(granted.count) {
            let descriptor = try device.queryBuffer(index: UInt32(index), bufferType: bufferType, memory: .mmap)
            var planes: [(fd: Int32, size: Int)] = []
            for plane in 0..<descriptor.planeCount {
                let fd = try device.exportBuffer(index: UInt32(index), plane: UInt32(plane), bufferType: bufferType)
                made.append(FileDescriptor(rawValue: fd))
                planes.append((fd, Int(descriptor.planes[plane].length)))
            }
            buffers.append(planes)
        }
    } catch {
        throw failed(error)
    }
    let sizes = buffers.first?.map(\.size) ?? []
    if sizes.count < planeSizes.count || zip(sizes, planeSizes).contains(where: { $0 < $1 }) {
        throw tooSmall(sizes)
    }
    handedOver = true
    return buffers
}

/// Exports DRM dumb buffers (DRM_IOCTL_MODE_CREATE_DUMB + DRM_IOCTL_PRIME_HANDLE_TO_FD), for
/// example from vgem, the virtual GEM driver.
public final class DRMDumbBufferExporter: DMABufExporter {
    private struct State {
        /// The DRM node, open from a successful export to release.
        var node: FileDescriptor?
        var handles: [UInt32] = []
    }
    private let state = Locked(State())
    public let path: String
    /// How the DRM node is opened, asked and closed (the kernel; a test's fake DRM driver).
    private let backend: any DeviceBackend

    /// - Parameters:
    ///   - path: a DRM node such as `/dev/dri/card0`; nil finds the first vgem card.
    ///   - backend: how system calls on the DRM node are made.
    public init(path: String? = nil, backend: any DeviceBackend = KernelBackend.shared) {
        self.path = path ?? DRMDumbBufferExporter.findCard() ?? "/dev/dri/card0"
        self.backend = backend
    }

    public var name: String { "drm dumb \(path)" }

    /// The first /dev/dri/card* whose driver is vgem, else the first card.
    public static func findCard() -> String? {
        var first: String?
        for index in 0..<16 {
            let card = "/dev/dri/card\(index)"
            guard access(card, F_OK) == 0 else { continue }
            if first == nil { first = card }
            let driverLink = "/sys/class/drm/card\(index)/device/driver"
            var buffer = [CChar](repeating: 0, count: 512)
            let length = readlink(driverLink, &buffer, buffer.count - 1)
            if length > 0 {
                let target = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.hasSuffix("/vgem") { return card }
            }
        }
        return first
    }

    public func export(count: Int, planeSizes: [Int]) throws(CaptureError) -> [[(fd: Int32, size: Int)]] {
        let drm: FileDescriptor
        switch backend.open(path: path, flags: O_RDWR | O_CLOEXEC) {
        case .success(let opened): drm = FileDescriptor(rawValue: opened)
        case .failure(let errno):
            throw CaptureError(.allocator, "\(path): open failed: \(errno) (is the vgem module loaded? modprobe vgem)",
                               reason: .exporterUnavailable)
        }
        // Everything made is owned here until it is handed over: whatever step fails, the defer
        // closes every dmabuf (the planes of a half-made buffer too), every GEM handle and the node.
        var handles: [UInt32] = []
        var made: [FileDescriptor] = []
        var buffers: [[(fd: FileDescriptor, size: Int)]] = []
        var handedOver = false
        defer {
            if !handedOver {
                for fd in made { try? fd.close() }
                closeHandles(handles, node: drm)
                _ = backend.close(drm.rawValue)
            }
        }
        for _ in 0..<count {
            var planes: [(fd: FileDescriptor, size: Int)] = []
            for size in planeSizes {
                let width: UInt32 = 1024
                let rows = UInt32((size + 1023) / 1024)
                var create = cv4l2_drm_mode_create_dumb(height: rows, width: width, bpp: 8, flags: 0, handle: 0, pitch: 0, size: 0)
                if let errno = backend.ioctl(drm.rawValue, request: CV4L2_DRM_IOCTL_MODE_CREATE_DUMB, argument: &create) {
                    throw CaptureError(.allocator, "\(path): DRM_IOCTL_MODE_CREATE_DUMB (\(size) bytes) failed: \(errno)")
                }
                handles.append(create.handle)
                var prime = cv4l2_drm_prime_handle(handle: create.handle, flags: UInt32(O_CLOEXEC | O_RDWR), fd: -1)
                if let errno = backend.ioctl(drm.rawValue, request: CV4L2_DRM_IOCTL_PRIME_HANDLE_TO_FD, argument: &prime) {
                    throw CaptureError(.allocator, "\(path): DRM_IOCTL_PRIME_HANDLE_TO_FD failed: \(errno)")
                }
                let fd = FileDescriptor(rawValue: prime.fd)
                made.append(fd)
                planes.append((fd, Int(create.size)))
            }
            buffers.append(planes)
        }
        state.withLock {
            $0.node = drm
            $0.handles = handles
        }
        handedOver = true
        return buffers.map { $0.map { (fd: $0.fd.rawValue, size: $0.size) } }
    }

    /// DRM_IOCTL_GEM_CLOSE of each handle (the dmabufs made from them stay valid).
    private func closeHandles(_ handles: [UInt32], node: FileDescriptor) {
        for handle in handles {
            var request = cv4l2_drm_gem_close(handle: handle, pad: 0)
            _ = backend.ioctl(node.rawValue, request: CV4L2_DRM_IOCTL_GEM_CLOSE, argument: &request)
        }
    }

    public func release() {
        let (node, handles) = state.withLock { state in
            defer {
                state.node = nil
                state.handles = []
            }
            return (state.node, state.handles)
        }
        guard let node else { return }
        closeHandles(handles, node: node)
        _ = backend.close(node.rawValue)
    }
}
