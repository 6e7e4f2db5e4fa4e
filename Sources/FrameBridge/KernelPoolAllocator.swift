import Synchronization
import V4L2

/// The default allocator: the driver's own buffer pool (V4L2 MMAP).
///
/// Initialize asks the driver for buffers with VIDIOC_REQBUFS(MMAP); allocate finds each
/// plane with VIDIOC_QUERYBUF and maps it with mmap(2); ``grow(by:)`` adds buffers with
/// VIDIOC_CREATE_BUFS; free unmaps; delete gives the buffers back with REQBUFS(0).
/// Frames are mappable host memory, so any consumer can read them.
public final class KernelPoolAllocator: AllocatorDispatch {
    private struct State {
        var queue: PinQueue?
        var granted = 0
    }
    private let state = Locked(State())

    public init() {}

    public var name: String { "kernel-pool (mmap)" }
    public var offer: AllocatorOffer { AllocatorOffer(memoryKind: .mmap) }

    public func initialize(queue: PinQueue, framing: AllocatorFraming, frameCount: Int) throws(CaptureError) -> Int {
        let granted: RequestedBuffers
        do {
            granted = try queue.device.requestBuffers(count: UInt32(frameCount), bufferType: queue.bufferType, memory: .mmap)
        } catch {
            throw CaptureError(error)
        }
        guard granted.count > 0 else {
            throw CaptureError(.allocator, "\(queue.device.path): VIDIOC_REQBUFS granted no mmap buffers (asked for \(frameCount))")
        }
        state.withLock {
            $0.queue = queue
            $0.granted = Int(granted.count)
        }
        return Int(granted.count)
    }

    public func allocate(index: Int) throws(CaptureError) -> FrameMemory {
        guard let queue = state.withLock({ $0.queue }) else {
            throw CaptureError(.invalidState, "\(name): allocate before initialize")
        }
        let device = queue.device
        let descriptor: BufferDescriptor
        do {
            descriptor = try device.queryBuffer(index: UInt32(index), bufferType: queue.bufferType, memory: .mmap)
        } catch {
            throw CaptureError(error)
        }
        var planes: [PlaneMemory] = []
        for i in 0..<descriptor.planeCount {
            let plane = descriptor.planes[i]
            do {
                let mapping = try device.map(length: Int(plane.length), offset: plane.mapOffset)
                planes.append(PlaneMemory(address: mapping.baseAddress, length: Int(plane.length), mapOffset: plane.mapOffset))
            } catch {
                for mapped in planes {
                    device.unmap(UnsafeMutableRawBufferPointer(start: mapped.address, count: mapped.length))
                }
                throw CaptureError(error)
            }
        }
        return FrameMemory(planes: planes)
    }

    public func free(index: Int, memory: FrameMemory) {
        guard let device = state.withLock({ $0.queue?.device }) else { return }
        for i in 0..<memory.planeCount {
            let plane = memory.planes[i]
            device.unmap(UnsafeMutableRawBufferPointer(start: plane.address, count: plane.length))
        }
    }

    public func delete() {
        let queue = state.withLock { state -> PinQueue? in
            defer { state.queue = nil; state.granted = 0 }
            return state.queue
        }
        guard let queue else { return }
        _ = try? queue.device.requestBuffers(count: 0, bufferType: queue.bufferType, memory: .mmap)
    }

    /// Adds `count` buffers with VIDIOC_CREATE_BUFS. Returns the index range of the new
    /// buffers; the caller allocates and queues them (see ``CapturePin/addFrames(_:)``).
    public func grow(by count: Int) throws(CaptureError) -> Range<Int> {
        guard let queue = state.withLock({ $0.queue }) else {
            throw CaptureError(.invalidState, "\(name): grow before initialize")
        }
        let created: CreatedBuffers
        do {
            created = try queue.device.createBuffers(count: UInt32(count), memory: .mmap, format: queue.format)
        } catch {
            throw CaptureError(error)
        }
        state.withLock { $0.granted = Int(created.index + created.count) }
        return Int(created.index)..<Int(created.index + created.count)
    }
}
