import DequeModule
import Synchronization
import V4L2

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
        /// The frames held behind the leading edge, oldest first (at most `trailingWindow`).
        var trailing = Deque<(slot: Int, generation: UInt32)>()
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
        guard !state.machine.isStreaming, state.machine.isOver, state.livePointers == 0, let allocator = state.allocator, let storage = state.storage else { return nil }
        state.slots.removeAll()
        state.queuedCount = 0
        state.storage = nil
        state.allocator = nil
        state.teardownsRunning += 1
        publish(state)
        return Teardown(allocator: allocator, storage: storage, core: self)
    }
}
