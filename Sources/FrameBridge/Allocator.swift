import V4L2

/// The memory of one plane of a frame, as an allocator provides it.
///
/// It is `@unchecked Sendable` because it carries a raw address: who may touch the memory
/// is decided by the pin (the driver while queued, lock holders while dequeued).
public struct PlaneMemory: @unchecked Sendable {
    /// Where the CPU can read the plane (nil when the memory is not mappable).
    public var address: UnsafeMutableRawPointer?
    /// Size of the plane's memory in bytes.
    public var length: Int
    /// MMAP: the offset QUERYBUF gave (the driver's cookie for this plane).
    public var mapOffset: UInt32
    /// DMABUF: the dmabuf file descriptor; -1 otherwise.
    public var fd: Int32

    public init(address: UnsafeMutableRawPointer?, length: Int, mapOffset: UInt32 = 0, fd: Int32 = -1) {
        self.address = address
        self.length = length
        self.mapOffset = mapOffset
        self.fd = fd
    }
}

/// The memory of one frame: one ``PlaneMemory`` per plane, stored inline.
public struct FrameMemory: Sendable {
    public var planeCount: Int
    public var planes: InlineArray<8, PlaneMemory>

    public init(planes: [PlaneMemory]) {
        planeCount = min(planes.count, maximumPlaneCount)
        self.planes = InlineArray(repeating: PlaneMemory(address: nil, length: 0))
        for (i, plane) in planes.prefix(maximumPlaneCount).enumerated() { self.planes[i] = plane }
    }
}

/// The capture queue an allocator works on: the device, the queue type and the format.
public struct PinQueue: Sendable {
    public let device: VideoDevice
    public let bufferType: BufferType
    public let format: ImageFormat

    public init(device: VideoDevice, bufferType: BufferType, format: ImageFormat) {
        self.device = device
        self.bufferType = bufferType
        self.format = format
    }
}

/// What an allocator can provide, declared before it is initialized so that
/// ``AllocatorSelection`` can check it against the pin's framing.
public struct AllocatorOffer: Hashable, Sendable, Codable {
    /// The memory kind its frames are handed to the driver as.
    public var memoryKind: MemoryKind
    /// The size it will give each plane; nil means "sized to the framing".
    public var planeSizes: [Int]?
    /// The alignment of the memory it hands out.
    public var alignment: Int
    /// The most frames it can provide; nil means no limit of its own.
    public var framesMaximum: Int?
    /// Whether the CPU can read the frames (they can be mapped).
    public var cpuAccessible: Bool
    /// Whether the memory is device memory (a dmabuf from an exporter), the kernel-mode
    /// allocator analog: chosen only for a consumer that accepts device memory.
    public var deviceMemory: Bool

    public init(memoryKind: MemoryKind, planeSizes: [Int]? = nil, alignment: Int = pageSize, framesMaximum: Int? = nil,
                cpuAccessible: Bool = true, deviceMemory: Bool = false) {
        self.memoryKind = memoryKind
        self.planeSizes = planeSizes
        self.alignment = alignment
        self.framesMaximum = framesMaximum
        self.cpuAccessible = cpuAccessible
        self.deviceMemory = deviceMemory
    }
}

/// An allocator with the four steps of AVStream's `KSALLOCATOR_DISPATCH`.
///
/// The pin drives it: ``initialize(queue:framing:frameCount:)`` once (InitializeAllocator:
/// it also asks the driver for buffers of its memory kind and returns how many it got),
/// ``allocate(index:)`` for each buffer (Allocate), ``free(index:memory:)`` for each when
/// streaming is over (Free), and ``delete()`` last (DeleteAllocator: gives the buffers back
/// to the driver with REQBUFS(0)). An allocator is never initialized before selection
/// accepted its ``offer``.
///
/// Between allocate and free, a frame's memory stays the frame's: when the last reference
/// to a frame goes, the pin hands the same memory to the driver again (QBUF).
public protocol AllocatorDispatch: AnyObject, Sendable {
    /// A name for reports, e.g. `kernel-pool (mmap)`.
    var name: String { get }
    /// What it offers, checked against the framing before it is initialized.
    var offer: AllocatorOffer { get }
    /// InitializeAllocator: prepares `frameCount` frames that satisfy `framing` on `queue`
    /// (including VIDIOC_REQBUFS of its memory kind). Returns the number of frames granted.
    func initialize(queue: PinQueue, framing: AllocatorFraming, frameCount: Int) throws(CaptureError) -> Int
    /// Allocate: the memory of frame `index` (0 ..< granted).
    func allocate(index: Int) throws(CaptureError) -> FrameMemory
    /// Free: releases the memory of frame `index`.
    func free(index: Int, memory: FrameMemory)
    /// DeleteAllocator: releases everything, including the driver's buffers (REQBUFS(0)).
    func delete()
    /// Called before the CPU reads frame `index` (DMA_BUF_IOCTL_SYNC start for dmabufs). A
    /// failure fails the lock.
    func beginCPUAccess(index: Int, memory: FrameMemory) throws(CaptureError)
    /// Called after the CPU is done reading frame `index`. A failure is counted in
    /// ``CaptureStatistics/synchronizationFailures``.
    func endCPUAccess(index: Int, memory: FrameMemory) throws(CaptureError)
}

extension AllocatorDispatch {
    public func beginCPUAccess(index: Int, memory: FrameMemory) throws(CaptureError) {}
    public func endCPUAccess(index: Int, memory: FrameMemory) throws(CaptureError) {}
    public var memoryKind: MemoryKind { offer.memoryKind }
}
