import SystemPackage
import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// A vendor allocator of ordinary user memory (V4L2 USERPTR).
///
/// Each plane is page-aligned memory from posix_memalign, sized to the framing (or to
/// `planeSizes` when given, which selection checks against the framing first). The driver
/// writes into it directly; QBUF carries the address and length.
public final class UserPointerAllocator: AllocatorDispatch {
    private struct State {
        var queue: PinQueue?
        var sizes: [Int] = []
    }
    private let state = Locked(State())
    private let requestedSizes: [Int]?
    private let alignment: Int

    /// - Parameters:
    ///   - planeSizes: the bytes to allocate per plane; nil sizes them to the framing.
    ///   - alignment: the alignment of each plane; a page by default.
    public init(planeSizes: [Int]? = nil, alignment: Int = pageSize) {
        requestedSizes = planeSizes
        self.alignment = alignment
    }

    public var name: String { "user-pointer (userptr)" }
    public var offer: AllocatorOffer {
        AllocatorOffer(memoryKind: .userPointer, planeSizes: requestedSizes, alignment: alignment)
    }

    public func initialize(queue: PinQueue, framing: AllocatorFraming, frameCount: Int) throws(CaptureError) -> Int {
        let granted: RequestedBuffers
        do {
            granted = try queue.device.requestBuffers(count: UInt32(frameCount), bufferType: queue.bufferType, memory: .userPointer)
        } catch {
            throw CaptureError(error)
        }
        guard granted.count > 0 else {
            throw CaptureError(.allocator, "\(queue.device.path): VIDIOC_REQBUFS granted no userptr buffers (asked for \(frameCount))")
        }
        let sizes = requestedSizes ?? framing.planeSizes.map { ($0 + pageSize - 1) / pageSize * pageSize }
        state.withLock {
            $0.queue = queue
            $0.sizes = sizes
        }
        return Int(granted.count)
    }

    public func allocate(index: Int) throws(CaptureError) -> FrameMemory {
        let sizes = state.withLock { $0.sizes }
        var planes: [PlaneMemory] = []
        for size in sizes {
            var pointer: UnsafeMutableRawPointer?
            let result = posix_memalign(&pointer, max(alignment, MemoryLayout<Int>.size), size)
            guard result == 0, let pointer else {
                for plane in planes { Glibc.free(plane.address) }
                throw CaptureError(.allocator, "\(name): posix_memalign of \(size) bytes failed: \(Errno(rawValue: result))")
            }
            memset(pointer, 0, size)
            planes.append(PlaneMemory(address: pointer, length: size))
        }
        return FrameMemory(planes: planes)
    }

    public func free(index: Int, memory: FrameMemory) {
        for i in 0..<memory.planeCount {
            Glibc.free(memory.planes[i].address)
        }
    }

    public func delete() {
        let queue = state.withLock { state -> PinQueue? in
            defer { state.queue = nil }
            return state.queue
        }
        guard let queue else { return }
        _ = try? queue.device.requestBuffers(count: 0, bufferType: queue.bufferType, memory: .userPointer)
    }
}
