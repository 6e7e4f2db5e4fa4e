import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// What the pin does with a dequeued buffer: the state machine's check that it belongs to the
/// stream, the validator's verdict, the leading edge and trailing window; and fatal errors.
extension CapturePin {
    /// After DQBUF reported an impossible index, the buffer it really dequeued is one the pin
    /// still counts as queued: find it with VIDIOC_QUERYBUF (neither QUEUED nor DONE) and queue
    /// it again, so that no buffer is lost. Called with the state locked.
    func reclaimMisreportedBuffers(_ state: inout PinCore.State) {
        for index in state.slots.indices where state.slots[index].state == .queued {
            guard let answer = try? device.queryBuffer(index: UInt32(index), bufferType: bufferType, memory: core.streamMemoryKind),
                  answer.flags.isDisjoint(with: [.queued, .done]) else { continue }
            _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
        }
        core.publish(state)
    }

    /// Checks a dequeued buffer and, when it is sound, makes it the leading edge (and, with
    /// `clone`, takes a reference to it for the caller in the same critical section).
    ///
    /// `descriptor` is inout only so that it is passed by address: by value, Swift copied the
    /// ~300-byte descriptor into the locked closure on every frame. It is not changed.
    func accept(_ descriptor: inout BufferDescriptor, clone: Holders, epoch: UInt64) -> Outcome? {
        core.state.withLock { state -> Outcome? in
            guard state.machine.dequeued(epoch: epoch) == .accept else {
                // The stream this wait was for is over: stop() (and perhaps a start) ran on
                // another thread since. Not a driver violation, and not a sequence of this
                // stream. A buffer of a stream that started meanwhile would be lost: reclaim it.
                if state.machine.isStreaming { reclaimMisreportedBuffers(&state) }
                return .woken
            }
            let index = Int(descriptor.index)
            // Sequence gaps are frames the driver dropped. A buffer rejected below still used
            // its sequence number: it is counted as a violation, not also as a drop.
            var dropped: UInt32 = 0
            if let last = state.statistics.lastSequence, descriptor.sequence > last &+ 1, descriptor.sequence > last {
                dropped = descriptor.sequence - last - 1
                state.statistics.dropped += Int(dropped)
            }
            if state.statistics.firstSequence == nil { state.statistics.firstSequence = descriptor.sequence }
            if state.statistics.lastSequence.map({ descriptor.sequence > $0 }) ?? true {
                state.statistics.lastSequence = descriptor.sequence
            }
            guard index >= 0, index < state.slots.count else {
                state.statistics.driverViolations += 1
                state.statistics.lastViolation = "VIDIOC_DQBUF returned index \(index), outside 0..<\(state.slots.count)"
                reclaimMisreportedBuffers(&state)
                return nil
            }
            guard state.slots[index].state == .queued else {
                state.statistics.driverViolations += 1
                state.statistics.lastViolation = "VIDIOC_DQBUF returned buffer \(index), which was not queued"
                reclaimMisreportedBuffers(&state)
                return nil
            }
            guard let memories = state.memoryBase else { return nil }
            var synchronizationFailed = false
            let verdict = core.validator.verdict(&descriptor, memory: memories + index,
                                                 synchronize: state.synchronizesCPUAccess ? state.allocator : nil,
                                                 synchronizationFailed: &synchronizationFailed)
            if synchronizationFailed { state.statistics.synchronizationFailures += 1 }
            let defects: CompressedFrameDefects
            switch verdict {
            case .violation(let problem):
                state.statistics.driverViolations += 1
                state.statistics.lastViolation = problem.description
                _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
                return nil
            case .requeueCorrupt(let found):
                state.statistics.count(found, buffer: index, sequence: descriptor.sequence)
                state.statistics.corruptSkipped += 1
                _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
                return nil
            case .requeueErrorFrame(let found):
                if !found.isEmpty { state.statistics.count(found, buffer: index, sequence: descriptor.sequence) }
                state.statistics.errorFlagged += 1
                state.statistics.skippedErrorFrames += 1
                _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
                return nil
            case .deliver(let found):
                defects = found
                if !found.isEmpty {
                    state.statistics.count(found, buffer: index, sequence: descriptor.sequence)
                    state.statistics.corruptDelivered += 1
                }
                if descriptor.flags.contains(.error) { state.statistics.errorFlagged += 1 }
            }
            state.dequeueCounter += 1
            PinCore.setSlot(&state, index, .held)
            let slot = state.slots.address(index)
            slot.pointee.generation &+= 1
            slot.pointee.references = 1
            slot.pointee.locks = 0
            slot.pointee.dequeueOrder = state.dequeueCounter
            // Holders: the slot, plus the caller's pointer when one is made below.
            let record = state.records.take(&descriptor, droppedBefore: dropped, holders: clone == .edgeOnly ? 1 : 2)
            if !defects.isEmpty { FrameRecord.info(record).pointee.defects = defects }
            FrameRecord.info(record).pointee.formatGeneration = state.formatGeneration
            slot.pointee.record = record
            let generation = slot.pointee.generation
            let previous = state.leadingEdge
            state.leadingEdge = clone == .pointerOnly ? nil : (index, generation)
            if let previous {
                if core.trailingWindow > 0 {
                    state.trailing.append(previous)
                    if state.trailing.count > core.trailingWindow, let oldest = state.trailing.popFirst() {
                        core.dropReference(&state, slot: oldest.slot, generation: oldest.generation)
                    }
                } else {
                    core.dropReference(&state, slot: previous.slot, generation: previous.generation)
                }
            }
            state.statistics.delivered += 1
            core.publish(state)
            guard clone != .edgeOnly else { return .advanced }
            // With .pointerOnly the pointer takes over the reference the edge would have had.
            if clone == .edgeAndPointer { slot.pointee.references += 1 }
            let id = PinCore.issuePointer(&state)
            return .frame(StreamPointer(core: core, slot: index, generation: generation, id: id, record: record))
        }
    }

    /// Stops the stream after a fatal error and records it; returns the error to throw.
    /// ``fail(_:)``, or nil when stop() ran on another thread while this one waited (STREAMOFF
    /// makes poll say POLLERR and DQBUF EINVAL): the wait was ended by the stop, as if woken.
    func failUnlessStopped(_ error: V4L2Error) -> CaptureError? {
        if wasStoppedByCaller { return nil }
        let failure = fail(error)
        if failure.kind == .invalidState, wasStoppedByCaller { return nil }
        return failure
    }

    func fail(_ error: V4L2Error) -> CaptureError {
        let captureError: CaptureError
        if error.errno == .noSuchDevice || device.isDisconnected {
            // An unplug shows as ENODEV, or (depending on timing) as EINVAL or POLLERR from a
            // node whose QUERYCAP then says ENODEV.
            captureError = CaptureError(.disconnected, "\(device.path): the device was disconnected (\(error.operation): \(error.errno?.name ?? "POLLERR"))", underlying: error)
        } else if error.errno == .ioError || error.operation == "poll" {
            captureError = CaptureError(.fatalStreamingError, "\(device.path): streaming stopped after a fatal driver error (\(error.operation): \(error.errno?.name ?? "POLLERR"))", underlying: error)
        } else {
            captureError = CaptureError(error)
        }
        return record(failure: captureError)
    }

    /// Takes `failure` to the state machine: while streaming, STREAMOFF and the held frames
    /// cancelled; returns the error to throw (the first failure, when there was one already).
    func record(failure captureError: CaptureError) -> CaptureError {
        var handlers: [@Sendable () -> Void] = []
        var teardown: PinCore.Teardown?
        let thrown = core.state.withLock { state -> CaptureError in
            switch state.machine.fail(captureError) {
            case .streamOffAndCancel(let error):
                _ = try? device.streamOff(bufferType)
                handlers = core.cancelHeldFrames(&state)
                core.publish(state)
                teardown = core.takeTeardownIfDone(&state)
                return error
            case .record(let error):
                core.publish(state)
                return error
            case .alreadyFailed(let first):
                return first
            case .notStreaming:
                // stop() ran on another thread while this one waited: not a driver failure.
                return CaptureError(.invalidState, "\(device.path): the pin was stopped while waiting for a frame")
            }
        }
        for handler in handlers { handler() }
        teardown?.run()
        return thrown
    }
}
