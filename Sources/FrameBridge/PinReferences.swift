import V4L2

/// References to held frames: clones, releases, locks with their CPU-access brackets, cancel
/// handlers, and the cancellation of held frames at a stop, a failure or a source change.
extension PinCore {
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
        state.trailing.removeAll(keepingCapacity: true)
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
        for entry in state.trailing {
            if entry.slot == index && entry.generation == generation { count += 1 }
        }
        return count
    }
}
