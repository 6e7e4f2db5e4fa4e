import V4L2

/// The metadata of one dequeued frame, at an address that stays put while anyone holds it.
@usableFromInline struct FrameRecord {
    var info: FrameInfo
    /// Who holds the record: the slot while the frame is its current one, plus one per stream
    /// pointer. Changed only under the pin's lock.
    var holders: Int

    // Field addresses without key paths: a key path to the field in the per-frame code
    // allocated an object on every use once inlined into another module. `info` is the first
    // field, so a record's address is its info's (checked when a pool is made).
    // `holders` follows it at the next Int-aligned offset (also checked), a constant the
    // compiler folds, where a stored `static let` would be a lazy global read per call.
    static var holdersOffset: Int {
        (MemoryLayout<FrameInfo>.size + MemoryLayout<Int>.alignment - 1) & ~(MemoryLayout<Int>.alignment - 1)
    }

    /// The address of `record`'s metadata, which its holders read without the pin's lock.
    @inlinable static func info(_ record: UnsafeMutablePointer<FrameRecord>) -> UnsafeMutablePointer<FrameInfo> {
        UnsafeMutableRawPointer(record).assumingMemoryBound(to: FrameInfo.self)
    }

    /// The address of `record`'s holder count.
    static func holders(_ record: UnsafeMutablePointer<FrameRecord>) -> UnsafeMutablePointer<Int> {
        (UnsafeMutableRawPointer(record) + holdersOffset).assumingMemoryBound(to: Int.self)
    }
}

/// A pool of ``FrameRecord``s, so a stream pointer can carry one machine word for its frame's
/// metadata instead of a copy of it (which made every move of a pointer a ~200-byte memmove).
///
/// A record is written once, under the pin's lock, before the first pointer to its frame is
/// made, and is not written again until its last holder has gone. So a pointer reads its
/// `info` without the lock, even after its frame was cancelled and its buffer dequeued
/// again (that frame gets another record). The records are allocated in chunks that never
/// move and are freed with the pool; in steady state taking and giving back a record
/// allocates nothing.
///
/// A value in the pin's locked state (a struct, so the per-frame calls retain nothing); every
/// method is called with the pin's lock held. ``deallocate()`` frees the records once no
/// pointer can read them (when the pin's core goes).
struct FrameRecordPool {
    private var chunks: [UnsafeMutablePointer<FrameRecord>] = []
    private var free: UnsafeMutablePointer<UnsafeMutablePointer<FrameRecord>>
    private var freeCount = 0
    private var capacity = 0
    static let chunkSize = 16

    init() {
        precondition(MemoryLayout<FrameRecord>.offset(of: \.info) == 0, "FrameRecord.info must be its first field")
        precondition(MemoryLayout<FrameRecord>.offset(of: \.holders) == FrameRecord.holdersOffset, "FrameRecord.holders is not where expected")
        free = .allocate(capacity: 1)
    }

    func deallocate() {
        for chunk in chunks {
            chunk.deinitialize(count: FrameRecordPool.chunkSize)
            chunk.deallocate()
        }
        free.deallocate()
    }

    /// A record holding `descriptor`'s metadata, with `holders` holders (the slot, and the
    /// pointers about to be made).
    /// (`descriptor` is inout only to be passed by address; it is not changed.)
    mutating func take(_ descriptor: inout BufferDescriptor, droppedBefore: UInt32, holders: Int) -> UnsafeMutablePointer<FrameRecord> {
        if freeCount == 0 { grow() }
        freeCount -= 1
        let record = free[freeCount]
        FrameRecord.info(record).pointee.assign(&descriptor, droppedBefore: droppedBefore)
        FrameRecord.holders(record).pointee = holders
        return record
    }

    /// One more holder.
    func retain(_ record: UnsafeMutablePointer<FrameRecord>) {
        FrameRecord.holders(record).pointee += 1
    }

    /// One holder fewer; at none the record can be taken again.
    mutating func release(_ record: UnsafeMutablePointer<FrameRecord>) {
        let holders = FrameRecord.holders(record)
        holders.pointee -= 1
        precondition(holders.pointee >= 0, "frame record released more often than held")
        if holders.pointee == 0 {
            precondition(freeCount < capacity, "frame record given back twice")
            free[freeCount] = record
            freeCount += 1
        }
    }

    private mutating func grow() {
        let chunk = UnsafeMutablePointer<FrameRecord>.allocate(capacity: FrameRecordPool.chunkSize)
        chunk.initialize(repeating: FrameRecord(info: .empty, holders: 0), count: FrameRecordPool.chunkSize)
        chunks.append(chunk)
        capacity += FrameRecordPool.chunkSize
        let larger = UnsafeMutablePointer<UnsafeMutablePointer<FrameRecord>>.allocate(capacity: capacity)
        larger.update(from: free, count: freeCount)
        free.deallocate()
        free = larger
        for i in 0..<FrameRecordPool.chunkSize {
            free[freeCount] = chunk + i
            freeCount += 1
        }
    }
}
