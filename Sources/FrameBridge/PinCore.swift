import Synchronization
import V4L2

/// What the pin does when the consumer holds every buffer, so the driver has none to fill.
public enum StarvationPolicy: String, Sendable, Codable, CaseIterable {
    /// Wait for the consumer to release a frame (``CapturePin/advance(timeout:)``
    /// returns false when its timeout passes); each wait is counted.
    case block
    /// Cancel the oldest held frame that is not locked and give it back to the driver; counted.
    case cancelOldestUnlocked = "cancel-oldest"
}

/// What the pin does with a frame the driver flagged with V4L2_BUF_FLAG_ERROR.
public enum ErrorFramePolicy: String, Sendable, Codable, CaseIterable {
    /// Deliver it (``FrameInfo/hasError`` is true); counted.
    case deliver
    /// Give it straight back to the driver; counted, not delivered.
    case skip
}

/// How a pin checks what the driver wrote into a frame.
enum FrameValidation: Sendable {
    /// bytesused must be 1...length: anything else is a driver violation.
    case uncompressed
    /// A compressed format: bytesused 0 and bytesused > length are corrupt frames (policy applies).
    case compressed
    /// A JPEG format: as `compressed`, plus the SOI and EOI markers.
    case jpeg
}

/// The shared state behind a ``CapturePin`` and its ``StreamPointer``s.
final class PinCore: Sendable {
    enum SlotState: Sendable {
        /// Allocated, owned by user space, neither queued nor referenced.
        case free
        /// Owned by the driver.
        case queued
        /// Dequeued and referenced by at least one pointer (or the leading edge / trailing window).
        case held
    }

    struct CancelHandler: Sendable {
        var pointer: UInt64
        var locked: Bool
        var handler: @Sendable () -> Void
    }

    /// Unchecked: `record` is a raw pointer; a slot is only read or written under the pin's lock.
    struct Slot: @unchecked Sendable {
        var state: SlotState = .free
        var references = 0
        var locks = 0
        var generation: UInt32 = 0
        /// Dequeued at this point in the stream's order (for "oldest" decisions).
        var dequeueOrder: UInt64 = 0
        var handlers: [CancelHandler] = []
        /// The metadata of the frame it holds (one holder of the record), while held.
        var record: UnsafeMutablePointer<FrameRecord>?
    }

    /// Only ever touched under `state`'s lock; the raw base pointers point into `storage`.
    struct State: @unchecked Sendable {
        /// Where the pin is in its life (``PinStateMachine``): every start, stop, failure and
        /// source change goes through it.
        var machine = PinStateMachine()
        var slots = SlotTable(capacity: AllocatorFraming.queueMaximumFrames)
        /// The frames' metadata (pointers read their record without the lock).
        var records = FrameRecordPool()
        /// The frames' memory and their QBUF descriptors, at stable addresses for the stream.
        var storage: StreamStorage? {
            didSet {
                memoryBase = storage?.memories
                descriptorBase = storage?.descriptors
            }
        }
        /// `storage`'s arrays, for the per-frame paths (reading them needs no retain).
        var memoryBase: UnsafeMutablePointer<FrameMemory>?
        var descriptorBase: UnsafeMutablePointer<BufferDescriptor>?
        /// Slots in the queued state.
        var queuedCount = 0
        var allocator: (any AllocatorDispatch)?
        var leadingEdge: (slot: Int, generation: UInt32)?
        var trailing: [(slot: Int, generation: UInt32)] = []
        var trailingStart = 0
        var trailingCount = 0
        var statistics = CaptureStatistics()
        var livePointers = 0
        var nextPointerID: UInt64 = 1
        var dequeueCounter: UInt64 = 0
        var pendingRequeue = false
        /// Whether lock/unlock bracket CPU reads with the allocator's sync calls (dmabuf).
        var synchronizesCPUAccess = false
        /// The consumer waits with no buffer queued (starvation policy block): the next QBUF
        /// signals `wakeup` so that the wait goes on at once.
        var starvedWaiter = false
        /// The pin's wake-up event (set once by PinCore.init).
        var wakeup: WakeupEvent?
        /// Handlers of pointers that were locked when their frame was cancelled: each runs
        /// when its pointer unlocks.
        var pendingLockedHandlers: [CancelHandler] = []
        /// Teardowns taken out of the state whose free/REQBUFS(0) has not finished: a restart
        /// waits for them (vivid's S_DV_TIMINGS is EBUSY while the queue has buffers).
        var teardownsRunning = 0
        /// Source changes followed (restarts in a new format); stamped on every frame.
        var formatGeneration: UInt64 = 0
    }

    let device: VideoDevice
    let bufferType: BufferType
    let trailingWindow: Int
    let starvationPolicy: StarvationPolicy
    let errorFramePolicy: ErrorFramePolicy
    let corruptFramePolicy: CorruptFramePolicy
    /// How dequeued frames are checked before they are delivered.
    let validator: FrameValidator
    let state = Locked(State())
    /// Mirror of the state for the lock-free check before waiting: the stream's epoch
    /// (``PinStateMachine/epoch``) while it streams with buffers queued to the driver and no
    /// QBUF to retry, else 0. A wait remembers it, so that a buffer it dequeues after a stop
    /// (or a stop and a start) is not taken for one of the stream it waited on.
    /// Written under the lock, read without it.
    let fedEpoch = Atomic<UInt64>(0)
    /// Mirror of ``PinStateMachine/isFollowingSource``, for the poll set of a ``PinGroup``.
    let followingSource = Atomic<Bool>(false)
    /// Whether the pin subscribed to source-change events (POLLPRI joins the poll set).
    let subscribedToSource = Atomic<Bool>(false)
    /// In the consumer's poll set beside the device: stop() and wake() signal it (the wait
    /// returns), a starved waiter's requeue nudges it (the wait goes on), so a waiting pin is
    /// woken by a descriptor, not a timer slice.
    let wakeup: WakeupEvent

    /// Updates the lock-free mirror. Called with the state locked.
    func publish(_ state: State) {
        let fed = state.machine.isStreaming && state.queuedCount > 0 && !state.pendingRequeue
        fedEpoch.store(fed ? state.machine.epoch : 0, ordering: .releasing)
        followingSource.store(state.machine.isFollowingSource, ordering: .releasing)
    }

    /// Moves slot `index` to `newState`, keeping the queued count. Called with the state locked.
    @inline(__always)
    static func setSlot(_ state: inout State, _ index: Int, _ newState: SlotState) {
        let old = state.slots[index].state
        if old == .queued { state.queuedCount -= 1 }
        if newState == .queued { state.queuedCount += 1 }
        state.slots[index].state = newState
    }

    /// The memory kind of the current stream, readable without the lock.
    let memoryKindValue = Atomic<UInt32>(MemoryKind.mmap.rawValue)
    var streamMemoryKind: MemoryKind { MemoryKind(rawValue: memoryKindValue.load(ordering: .relaxed)) ?? .mmap }

    init(device: VideoDevice, bufferType: BufferType, trailingWindow: Int,
         starvationPolicy: StarvationPolicy, errorFramePolicy: ErrorFramePolicy,
         corruptFramePolicy: CorruptFramePolicy = .skip, validation: FrameValidation = .uncompressed) throws(CaptureError) {
        do {
            wakeup = try WakeupEvent()
        } catch {
            throw CaptureError(error)
        }
        self.device = device
        self.bufferType = bufferType
        self.trailingWindow = max(0, trailingWindow)
        self.starvationPolicy = starvationPolicy
        self.errorFramePolicy = errorFramePolicy
        self.corruptFramePolicy = corruptFramePolicy
        validator = FrameValidator(validation: validation, errorFramePolicy: errorFramePolicy, corruptFramePolicy: corruptFramePolicy)
        state.withLock { $0.wakeup = wakeup }
    }

    /// Makes the current (or next) wait of the consumer return at once.
    func wake() {
        wakeup.signal()
    }

    deinit {
        state.withLock { state in
            state.slots.deallocate()
            state.records.deallocate()
        }
    }

    // MARK: - Queueing

    /// QBUF of slot `index`'s memory, from the descriptor prepared when it was allocated.
    /// Called with the state locked.
    static func queue(_ state: inout State, index: Int, device: VideoDevice, bufferType: BufferType) -> V4L2Error? {
        guard let descriptors = state.descriptorBase else { return nil }
        do {
            try device.queue(descriptorAt: descriptors + index)
            setSlot(&state, index, .queued)
            if state.starvedWaiter {
                state.starvedWaiter = false
                state.wakeup?.nudge()
            }
            return nil
        } catch {
            setSlot(&state, index, .free)
            state.statistics.requeueFailures += 1
            state.pendingRequeue = true
            return error
        }
    }

    /// Drops one reference to slot `index`; at zero the frame goes back to the driver.
    /// Called with the state locked.
    func dropReference(_ state: inout State, slot index: Int, generation: UInt32) {
        guard index >= 0, index < state.slots.count else { return }
        let slot = state.slots.address(index)
        guard slot.pointee.generation == generation, slot.pointee.state == .held else { return }
        slot.pointee.references -= 1
        guard slot.pointee.references <= 0 else { return }
        slot.pointee.references = 0
        if !slot.pointee.handlers.isEmpty { slot.pointee.handlers.removeAll(keepingCapacity: true) }
        releaseRecord(&state, slot: index)
        if state.machine.isStreaming {
            _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
        } else {
            PinCore.setSlot(&state, index, .free)
        }
    }

    /// The slot lets go of its frame's record. Called with the state locked.
    func releaseRecord(_ state: inout State, slot index: Int) {
        if let record = state.slots[index].record {
            state.records.release(record)
            state.slots[index].record = nil
        }
    }

    // MARK: - Pointer operations

    /// Counts a new live pointer and returns its id. Called with the state locked.
    static func issuePointer(_ state: inout State) -> UInt64 {
        state.livePointers += 1
        defer { state.nextPointerID += 1 }
        return state.nextPointerID
    }

    /// A clone: one more reference to the frame (when it is still held) and a new pointer id,
    /// under one lock. A clone of a cancelled frame is a live pointer to a cancelled frame.
    func clone(slot: Int, generation: UInt32, record: UnsafeMutablePointer<FrameRecord>) -> UInt64 {
        state.withLock { state in
            if slot < state.slots.count, state.slots[slot].generation == generation, state.slots[slot].state == .held {
                state.slots[slot].references += 1
            }
            state.records.retain(record)
            return PinCore.issuePointer(&state)
        }
    }

    func release(slot: Int, generation: UInt32, pointer: UInt64, record: UnsafeMutablePointer<FrameRecord>) {
        let teardown = state.withLock { state -> Teardown? in
            state.records.release(record)
            dropReference(&state, slot: slot, generation: generation)
            state.livePointers -= 1
            publish(state)
            return takeTeardownIfDone(&state)
        }
        teardown?.run()
    }

    func isValid(slot: Int, generation: UInt32) -> Bool {
        state.withLock { state in
            slot < state.slots.count && state.slots[slot].generation == generation && state.slots[slot].state == .held
        }
    }

    func lock(slot: Int, generation: UInt32, pointer: UInt64, hasHandler: Bool) throws(CaptureError) -> UnsafePointer<FrameMemory> {
        let result = state.withLock { state -> (UnsafePointer<FrameMemory>, (any AllocatorDispatch)?)? in
            guard slot < state.slots.count, state.slots[slot].generation == generation,
                  state.slots[slot].state == .held, let storage = state.storage else { return nil }
            state.slots[slot].locks += 1
            if hasHandler {
                for i in state.slots[slot].handlers.indices where state.slots[slot].handlers[i].pointer == pointer {
                    state.slots[slot].handlers[i].locked = true
                }
            }
            return (UnsafePointer(storage.memories + slot), state.synchronizesCPUAccess ? state.allocator : nil)
        }
        guard let (memory, allocator) = result else {
            throw cancelledError()
        }
        do throws(CaptureError) {
            try allocator?.beginCPUAccess(index: slot, memory: memory.pointee)
        } catch {
            // The lock did not happen: undo its count (no end of access: none began).
            state.withLock { state in
                if slot < state.slots.count, state.slots[slot].generation == generation, state.slots[slot].state == .held {
                    state.slots[slot].locks -= 1
                    if hasHandler {
                        for i in state.slots[slot].handlers.indices where state.slots[slot].handlers[i].pointer == pointer {
                            state.slots[slot].handlers[i].locked = false
                        }
                    }
                }
            }
            throw error
        }
        return memory
    }

    func cancelledError() -> CaptureError {
        let reason: String = state.withLock { state in
            switch state.machine.state {
            case .failed(let error): return error.message
            case .streaming: return "the frame was given back to the driver to keep it fed (starvation policy cancel-oldest)"
            case .restartPending, .noSignal, .starting(restart: true): return "the source changed (the stream was stopped to follow it)"
            case .stopped, .stopRequested, .idle, .starting: return "streaming was stopped (VIDIOC_STREAMOFF)"
            }
        }
        return CaptureError(.frameCancelled, "\(device.path): the frame was cancelled: \(reason)")
    }

    func unlock(slot: Int, generation: UInt32, pointer: UInt64, hasHandler: Bool) {
        var runHandler: (@Sendable () -> Void)?
        // The frame's memory by address (stable while streaming), not a ~260-byte copy.
        let synchronize = state.withLock { state -> (UnsafePointer<FrameMemory>, any AllocatorDispatch)? in
            guard slot < state.slots.count else { return nil }
            var synchronize: (UnsafePointer<FrameMemory>, any AllocatorDispatch)?
            if state.synchronizesCPUAccess, let memories = state.memoryBase, let allocator = state.allocator {
                synchronize = (UnsafePointer(memories + slot), allocator)
            }
            if state.slots[slot].generation == generation, state.slots[slot].state == .held {
                state.slots[slot].locks -= 1
                if hasHandler {
                    for i in state.slots[slot].handlers.indices where state.slots[slot].handlers[i].pointer == pointer {
                        state.slots[slot].handlers[i].locked = false
                    }
                }
                return synchronize
            }
            // Cancelled while locked: this pointer's handler runs now.
            if hasHandler, let index = state.pendingLockedHandlers.firstIndex(where: { $0.pointer == pointer }) {
                runHandler = state.pendingLockedHandlers.remove(at: index).handler
            }
            return synchronize
        }
        if let (memory, allocator) = synchronize {
            do throws(CaptureError) {
                try allocator.endCPUAccess(index: slot, memory: memory.pointee)
            } catch {
                state.withLock { $0.statistics.synchronizationFailures += 1 }
            }
        }
        runHandler?()
    }

    func addCancelHandler(slot: Int, generation: UInt32, pointer: UInt64, locked: Bool, handler: @escaping @Sendable () -> Void) {
        let entry = CancelHandler(pointer: pointer, locked: locked, handler: handler)
        let runNow = state.withLock { state -> Bool in
            guard slot < state.slots.count, state.slots[slot].generation == generation,
                  state.slots[slot].state == .held else {
                // Already cancelled: an unlocked pointer's handler runs now, a locked one's
                // when it unlocks, as if it had been registered before the cancellation.
                if locked { state.pendingLockedHandlers.append(entry) }
                return !locked
            }
            state.slots[slot].handlers.append(entry)
            return false
        }
        if runNow { handler() }
    }

    // MARK: - Cancelling

    /// Cancels every held frame: their generation moves on (so their pointers' locks fail),
    /// they become free, and the handlers of unlocked pointers are returned to run.
    /// Called with the state locked.
    func cancelHeldFrames(_ state: inout State) -> [@Sendable () -> Void] {
        var handlers: [@Sendable () -> Void] = []
        for index in state.slots.indices {
            if state.slots[index].state == .held {
                handlers += cancel(&state, slot: index)
            } else if state.slots[index].state == .queued {
                PinCore.setSlot(&state, index, .free)
            }
        }
        state.leadingEdge = nil
        state.trailingCount = 0
        state.trailingStart = 0
        return handlers
    }

    /// Cancels one held frame. Called with the state locked.
    func cancel(_ state: inout State, slot index: Int) -> [@Sendable () -> Void] {
        var handlers: [@Sendable () -> Void] = []
        let userReferences = state.slots[index].references - internalReferences(state, slot: index)
        if userReferences > 0 { state.statistics.cancelledFrames += 1 }
        for entry in state.slots[index].handlers {
            if entry.locked {
                state.pendingLockedHandlers.append(entry)
            } else {
                handlers.append(entry.handler)
            }
        }
        state.slots[index].handlers.removeAll(keepingCapacity: true)
        releaseRecord(&state, slot: index)
        state.slots[index].generation &+= 1
        state.slots[index].references = 0
        state.slots[index].locks = 0
        PinCore.setSlot(&state, index, .free)
        return handlers
    }

    /// References the pin itself holds on a slot (leading edge, trailing window).
    func internalReferences(_ state: State, slot index: Int) -> Int {
        var count = 0
        let generation = state.slots[index].generation
        if let edge = state.leadingEdge, edge.slot == index, edge.generation == generation { count += 1 }
        for i in 0..<state.trailingCount {
            let entry = state.trailing[(state.trailingStart + i) % max(1, state.trailing.count)]
            if entry.slot == index && entry.generation == generation { count += 1 }
        }
        return count
    }

    // MARK: - Teardown

    /// What is left to free once streaming is over and no pointer holds a frame.
    struct Teardown {
        var allocator: any AllocatorDispatch
        var storage: StreamStorage
        var core: PinCore

        func run() {
            for index in 0..<storage.count { allocator.free(index: index, memory: storage.memories[index]) }
            allocator.delete()
            core.state.withLock { $0.teardownsRunning -= 1 }
        }
    }

    /// When streaming is over and no pointer is alive, takes the allocator and the memory
    /// out of the state so they can be freed outside the lock.
    func takeTeardownIfDone(_ state: inout State) -> Teardown? {
        guard state.machine.isOver, state.livePointers == 0, let allocator = state.allocator, let storage = state.storage else { return nil }
        state.slots.removeAll()
        state.queuedCount = 0
        state.storage = nil
        state.allocator = nil
        state.teardownsRunning += 1
        publish(state)
        return Teardown(allocator: allocator, storage: storage, core: self)
    }
}

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
