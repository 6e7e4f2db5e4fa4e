import V4L2

/// One plane of a simulated buffer.
struct SimulatedPlane {
    /// The size the queue allocated for the plane (videobuf2's `min_length`).
    var minimumLength: UInt32
    /// The length reported to the application: `minimumLength` for MMAP, the length
    /// given to the last QBUF for USERPTR and DMABUF.
    var length: UInt32
    /// MMAP: the offset QUERYBUF reports, to pass to mmap.
    var mapOffset: UInt32
    /// MMAP: the memfd behind the plane.
    var memfd: Int32 = -1
    /// MMAP: the simulator's own mapping of the memfd, which frames are written through.
    var fillAddress: UnsafeMutableRawPointer?
    /// MMAP: the memfd's (page-aligned) size.
    var allocatedLength = 0
    /// USERPTR: the address from the last QBUF.
    var userPointer: UInt = 0
    /// DMABUF: the descriptor from the last QBUF, and the identity and mapping of its file.
    var dmabufDescriptor: Int32 = 0
    var dmabufDevice: UInt64 = 0
    var dmabufInode: UInt64 = 0
    var dmabufMapping: UnsafeMutableRawPointer?
    var dmabufMappingLength = 0
    var bytesUsed: UInt32 = 0
    var dataOffset: UInt32 = 0
}

/// Where a buffer is in videobuf2's life cycle.
enum SimulatedBufferState: UInt8 {
    /// Owned by the application.
    case dequeued
    /// Queued to the driver, waiting to be filled.
    case queued
    /// Filled, waiting in the done list for DQBUF.
    case done
}

/// One buffer of a simulated queue.
struct SimulatedBuffer {
    var state = SimulatedBufferState.dequeued
    var planes: [SimulatedPlane]
    /// Tells this allocation apart from earlier ones with the same index (for mappings).
    var serial: UInt64
    var sequence: UInt32 = 0
    var timestampNanoseconds: Int64 = 0
    var field: UInt32 = 0
    var hasError = false
    /// Live mmap()s of the buffer's planes (V4L2_BUF_FLAG_MAPPED).
    var mappings = 0
}

/// A fixed-capacity FIFO of buffer indexes: videobuf2's queued and done lists.
struct IndexRing {
    private var storage: [Int32]
    private var head = 0
    private(set) var count = 0

    init(capacity: Int) {
        storage = Array(repeating: -1, count: max(capacity, 1))
    }

    var isEmpty: Bool { count == 0 }

    mutating func append(_ index: Int) {
        precondition(count < storage.count, "IndexRing overflow")
        storage[(head + count) % storage.count] = Int32(index)
        count += 1
    }

    mutating func removeFirst() -> Int? {
        guard count > 0 else { return nil }
        let value = Int(storage[head])
        head = (head + 1) % storage.count
        count -= 1
        return value
    }

    subscript(position: Int) -> Int { Int(storage[(head + position) % storage.count]) }

    mutating func removeAll() {
        head = 0
        count = 0
    }

    var elements: [Int] { (0..<count).map { self[$0] } }
}

/// A mapping the simulator handed out through ``SimulatedV4L2Backend/mmap(_:length:protection:offset:)``.
struct SimulatedMapping {
    let address: UInt
    let length: Int
    let device: SimulatedDevice
    let serial: UInt64
    let index: Int
}
