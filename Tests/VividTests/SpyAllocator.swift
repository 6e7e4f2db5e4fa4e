import FrameBridge
import Synchronization
import V4L2

/// Wraps an allocator and records which of the four dispatch steps were called, so a test
/// can show that selection never initialized a rejected allocator.
final class SpyAllocator: AllocatorDispatch {
    let wrapped: any AllocatorDispatch
    let calls = Locked<[String]>([])

    init(_ wrapped: any AllocatorDispatch) { self.wrapped = wrapped }

    var name: String { "spy of \(wrapped.name)" }
    var offer: AllocatorOffer { wrapped.offer }
    var recorded: [String] { calls.withLock { $0 } }

    func initialize(queue: PinQueue, framing: AllocatorFraming, frameCount: Int) throws(CaptureError) -> Int {
        calls.withLock { $0.append("initialize") }
        return try wrapped.initialize(queue: queue, framing: framing, frameCount: frameCount)
    }
    func allocate(index: Int) throws(CaptureError) -> FrameMemory {
        calls.withLock { $0.append("allocate") }
        return try wrapped.allocate(index: index)
    }
    func free(index: Int, memory: FrameMemory) {
        calls.withLock { $0.append("free") }
        wrapped.free(index: index, memory: memory)
    }
    func delete() {
        calls.withLock { $0.append("delete") }
        wrapped.delete()
    }
}
