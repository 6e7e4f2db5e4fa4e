import V4L2

/// The memory of a stream's frames and their QBUF descriptors, at addresses that stay put
/// for the stream's lifetime (a locked stream pointer reads its frame's memory through one).
/// Written only under the pin's lock before a frame is first queued.
final class StreamStorage: @unchecked Sendable {
    let capacity: Int
    let memories: UnsafeMutablePointer<FrameMemory>
    let descriptors: UnsafeMutablePointer<BufferDescriptor>
    /// Frames allocated so far.
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        memories = .allocate(capacity: capacity)
        memories.initialize(repeating: FrameMemory(planes: []), count: capacity)
        descriptors = .allocate(capacity: capacity)
        descriptors.initialize(repeating: BufferDescriptor(index: 0, bufferType: .videoCapture, memory: .mmap), count: capacity)
    }

    deinit {
        memories.deinitialize(count: capacity)
        memories.deallocate()
        descriptors.deinitialize(count: capacity)
        descriptors.deallocate()
    }

    /// Records frame `index`'s memory and prepares the descriptor QBUF hands the driver.
    func store(_ memory: FrameMemory, at index: Int, bufferType: BufferType, kind: MemoryKind) {
        memories[index] = memory
        var descriptor = BufferDescriptor(index: UInt32(index), bufferType: bufferType, memory: kind, planeCount: memory.planeCount)
        for i in 0..<memory.planeCount {
            let plane = memory.planes[i]
            descriptor.planes[i].length = UInt32(truncatingIfNeeded: plane.length)
            switch kind {
            case .mmap: descriptor.planes[i].mapOffset = plane.mapOffset
            case .userPointer: descriptor.planes[i].userPointer = UInt(bitPattern: plane.address)
            case .dmabuf: descriptor.planes[i].fd = plane.fd
            }
        }
        descriptors[index] = descriptor
        count = max(count, index + 1)
    }
}

/// The pin's slots (one per buffer of the queue), at a stable address: the per-frame paths
/// change a slot in place, with no copy-on-write check or retain of an array buffer.
/// A value inside the pin's locked state; ``deallocate()`` frees it when the core goes.
struct SlotTable: RandomAccessCollection {
    private let base: UnsafeMutablePointer<PinCore.Slot>
    let capacity: Int
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
    }

    var startIndex: Int { 0 }
    var endIndex: Int { count }

    subscript(index: Int) -> PinCore.Slot {
        unsafeAddress {
            precondition(index >= 0 && index < count, "slot \(index) out of range 0..<\(count)")
            return UnsafePointer(base + index)
        }
        nonmutating unsafeMutableAddress {
            precondition(index >= 0 && index < count, "slot \(index) out of range 0..<\(count)")
            return base + index
        }
    }

    /// The address of slot `index`, for a per-frame path that touches several of its fields
    /// (one bounds check instead of one per field). Valid until the table changes size.
    func address(_ index: Int) -> UnsafeMutablePointer<PinCore.Slot> {
        precondition(index >= 0 && index < count, "slot \(index) out of range 0..<\(count)")
        return base + index
    }

    mutating func append(_ slot: PinCore.Slot) {
        precondition(count < capacity, "more than \(capacity) slots")
        (base + count).initialize(to: slot)
        count += 1
    }

    mutating func removeAll() {
        base.deinitialize(count: count)
        count = 0
    }

    mutating func deallocate() {
        removeAll()
        base.deallocate()
    }
}
