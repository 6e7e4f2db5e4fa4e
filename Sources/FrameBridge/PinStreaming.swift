import DequeModule
import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// Starting and stopping: allocator selection, allocation, QBUF of every frame and STREAMON
/// through the state machine; STREAMOFF and the cancellation of held frames; growing the pool.
extension CapturePin {
    /// Selects an allocator, initializes it, allocates and queues every frame, and starts
    /// streaming (VIDIOC_STREAMON). On failure nothing stays allocated, so a retry can succeed.
    ///
    /// - Returns: the selection, with the reasons for every rejected candidate.
    @discardableResult
    public func start(_ selection: AllocatorSelection = AllocatorSelection()) throws(CaptureError) -> AllocatorSelectionResult {
        try begin(selection, restart: false)
    }

    /// start(), or with `restart` the start after a source change: statistics go on, and the
    /// pin must still be following the change (a stop() meanwhile ends it).
    func begin(_ selection: AllocatorSelection, restart: Bool) throws(CaptureError) -> AllocatorSelectionResult {
        let decision = core.state.withLock { state -> (PinStateMachine.StartDecision, Int) in
            let decision = state.machine.start(restart: restart, resourcesHeld: state.allocator != nil)
            core.publish(state)
            return (decision, state.livePointers)
        }
        if case .reject(let rejection) = decision.0 {
            let message: String
            switch rejection {
            case .alreadyStreaming: message = "the pin is already streaming"
            case .startingElsewhere: message = "the pin is being started by another caller"
            case .followingSourceChange: message = "the pin is following a source change (restarting, or waiting for a signal); call stop() before start()"
            case .stoppedWhileFollowing: message = "the pin was stopped while it followed a source change"
            case .waitingForSignal: message = "the source has no signal to restart with"
            case .framesStillHeld: message = "\(decision.1) stream pointer(s) from the previous stream still hold frames; release them before starting again"
            }
            throw CaptureError(.invalidState, "\(device.path): \(message)")
        }
        do {
            return try setUpAndStream(selection, restart: restart)
        } catch {
            core.state.withLock { state in
                state.machine.startFailed(error)
                core.publish(state)
            }
            throw error
        }
    }

    /// The body of ``begin(_:restart:)`` once the state machine let it proceed: allocator
    /// selection, allocation, then QBUF of every frame and STREAMON, unless stop() came meanwhile.
    func setUpAndStream(_ selection: AllocatorSelection, restart: Bool) throws(CaptureError) -> AllocatorSelectionResult {
        if !restart {
            live.withLock { $0.selection = selection }
            // Before STREAMON, so that no change between the two goes unseen.
            try subscribeToSourceChanges()
        }

        let framing: AllocatorFraming
        do {
            let known = live.withLock { $0.framing }
            framing = try AllocatorFraming.query(device: device, bufferType: bufferType, knownMinimum: known.framesMinimum,
                                                 knownCompression: (known.pixelFormat, known.isCompressed))
        } catch {
            throw CaptureError(error)
        }
        live.withLock { $0.framing = framing }
        let result = selection.select(framing: framing)
        live.withLock { $0.lastSelection = result }
        let allocator = result.chosen
        let queue = PinQueue(device: device, bufferType: bufferType, format: format)

        let granted: Int
        do {
            granted = try allocator.initialize(queue: queue, framing: framing, frameCount: result.frameCount)
        } catch {
            allocator.delete()
            throw error
        }
        let kind = allocator.offer.memoryKind
        let storage = StreamStorage(capacity: AllocatorFraming.queueMaximumFrames)
        func undo() {
            for index in 0..<storage.count { allocator.free(index: index, memory: storage.memories[index]) }
            allocator.delete()
        }
        guard granted <= storage.capacity else {
            undo()
            throw CaptureError(.allocator, "\(allocator.name): granted \(granted) frames, more than a queue holds (\(storage.capacity))")
        }
        for index in 0..<granted {
            do throws(CaptureError) {
                let memory = try allocator.allocate(index: index)
                for plane in 0..<framing.countItems where plane < memory.planeCount && memory.planes[plane].length < framing.items[plane].bufferSize {
                    allocator.free(index: index, memory: memory)
                    throw CaptureError(.allocator, "\(allocator.name): frame \(index) plane \(plane) has \(memory.planes[plane].length) bytes, below the framing's \(framing.items[plane].bufferSize) (the largest frame, sizeimage)")
                }
                storage.store(memory, at: index, bufferType: bufferType, kind: kind)
            } catch {
                undo()
                throw error
            }
        }
        enum Commit { case streaming, abandoned, failed(V4L2Error) }
        let trailingCapacity = core.trailingWindow
        let commit = core.state.withLock { state -> Commit in
            switch state.machine.commitStart() {
            case .streamOn: break
            case .abandon:
                core.publish(state)
                return .abandoned
            case .invalid:
                preconditionFailure("\(device.path): a start committed without claiming the pin")
            }
            state.slots.removeAll()
            for _ in 0..<granted {
                var slot = PinCore.Slot()
                slot.handlers.reserveCapacity(2)
                state.slots.append(slot)
            }
            state.queuedCount = 0
            state.storage = storage
            state.allocator = allocator
            state.synchronizesCPUAccess = kind == .dmabuf
            core.memoryKindValue.store(kind.rawValue, ordering: .relaxed)
            if restart {
                // The counters go on across the change; the new stream numbers its frames from 0.
                state.statistics.lastSequence = nil
                state.statistics.sourceChanges += 1
                state.formatGeneration += 1
            } else {
                state.statistics = CaptureStatistics()
            }
            state.leadingEdge = nil
            // One more than the window: a frame joins before the oldest leaves.
            state.trailing = Deque(minimumCapacity: trailingCapacity + 1)
            state.pendingRequeue = false
            var failure: V4L2Error?
            for index in state.slots.indices where failure == nil {
                failure = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
            }
            if failure == nil {
                do throws(V4L2Error) {
                    try device.streamOn(bufferType)
                } catch {
                    failure = error
                }
            }
            if let failure {
                _ = try? device.streamOff(bufferType)
                state.slots.removeAll()
                state.queuedCount = 0
                state.storage = nil
                state.allocator = nil
                return .failed(failure)
            }
            state.statistics.requeueFailures = 0
            state.machine.started()
            state.starvedWaiter = false
            // A wake-up left from the previous stream's stop() must not end this stream's first wait.
            core.wakeup.drain()
            core.publish(state)
            return .streaming
        }
        switch commit {
        case .streaming:
            return result
        case .abandoned:
            // stop() came while the buffers were being set up: the pin never streams.
            undo()
            if !restart { unsubscribeFromSourceChanges() }
            throw CaptureError(.invalidState, "\(device.path): the pin was stopped while it started")
        case .failed(let failure):
            undo()
            throw CaptureError(failure)
        }
    }

    /// Stops streaming (VIDIOC_STREAMOFF): every buffer comes back from the driver, held frames
    /// are cancelled (their handlers run; a later lock fails), and the allocator frees the memory
    /// as soon as no stream pointer is alive. Safe to call more than once.
    public func stop() {
        var handlers: [@Sendable () -> Void] = []
        let teardown = core.state.withLock { state -> PinCore.Teardown? in
            // A stop ends a source change being followed too (the pin no longer restarts), and
            // a start under way abandons its set-up at its commit.
            if state.machine.stop() == .streamOffAndCancel {
                _ = try? device.streamOff(bufferType)
            }
            handlers = core.cancelHeldFrames(&state)
            core.publish(state)
            return core.takeTeardownIfDone(&state)
        }
        for handler in handlers { handler() }
        teardown?.run()
        unsubscribeFromSourceChanges()
        core.wake()
    }

    /// Makes a consumer waiting in ``advance(timeout:)`` or ``next(timeout:keepLeadingEdge:)``
    /// return at once (false / nil), from any thread; with no wait under way, the next one
    /// returns at once. The pin goes on streaming. ``stop()`` wakes the consumer too.
    public func wake() {
        core.wake()
    }

    /// The descriptor that ``wake()`` signals (an eventfd): a signal handler may pass it to
    /// `WakeupEvent.signal(descriptor:)` (async-signal-safe) to wake the consumer, after
    /// setting the flag the consumer checks. Valid while the pin exists.
    public var wakeupDescriptor: Int32 { core.wakeup.descriptor }

    /// Adds `count` frames while streaming (VIDIOC_CREATE_BUFS through the kernel pool allocator),
    /// allocates and queues them.
    public func addFrames(_ count: Int) throws(CaptureError) {
        guard count >= 1 else {
            throw CaptureError(.invalidConfiguration, "\(device.path): addFrames(\(count)): the number of frames to add must be at least 1")
        }
        // Under the state lock, like start(): stop() cannot delete the allocator between the
        // check, CREATE_BUFS and the new buffers' QBUF.
        let failure = core.state.withLock { state -> CaptureError? in
            guard let allocator = state.allocator, let storage = state.storage else {
                return CaptureError(.invalidState, "\(device.path): the pin has no buffers to add to; call start() first")
            }
            guard let pool = allocator as? KernelPoolAllocator else {
                return CaptureError(.invalidState, "\(device.path): only the kernel pool (mmap) allocator can grow")
            }
            let range: Range<Int>
            do throws(CaptureError) {
                range = try pool.grow(by: count)
            } catch {
                return error
            }
            for index in range {
                let memory: FrameMemory
                do throws(CaptureError) {
                    memory = try pool.allocate(index: index)
                } catch {
                    return error
                }
                guard index < storage.capacity else {
                    pool.free(index: index, memory: memory)
                    return CaptureError(V4L2Error(device: device.path, operation: "VIDIOC_CREATE_BUFS", errno: nil,
                                                  detail: "buffer \(index) is beyond the \(AllocatorFraming.queueMaximumFrames) a queue holds"))
                }
                storage.store(memory, at: index, bufferType: bufferType, kind: .mmap)
                while state.slots.count <= index { state.slots.append(PinCore.Slot()) }
                if state.machine.isStreaming, let error = PinCore.queue(&state, index: index, device: device, bufferType: bufferType) {
                    core.publish(state)
                    return CaptureError(error)
                }
            }
            core.publish(state)
            return nil
        }
        if let failure { throw failure }
    }
}
