import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// The consumer's wait: poll on the device and the wake-up eventfd, the starvation policy,
/// DQBUF, and the stream pointers handed out.
extension CapturePin {
    /// Moves the leading edge onto the next filled buffer (DQBUF), waiting up to `timeout`.
    ///
    /// The frame the leading edge was on moves into the trailing window (if one is configured)
    /// or loses the edge's reference; at no references it goes back to the driver.
    ///
    /// The wait has one deadline, from the monotonic clock: however often the driver wakes the
    /// poll without a buffer (EAGAIN), it ends when `timeout` has passed. ``stop()`` and
    /// ``wake()`` end it at once.
    ///
    /// Call it (and ``next(timeout:keepLeadingEdge:)``) from one consumer thread at a
    /// time; stream pointers may be cloned, locked and released from any thread.
    ///
    /// - Returns: true when the edge advanced; false when the timeout passed first, or the wait
    ///   was woken by ``stop()`` or ``wake()``.
    /// - Throws: ``CaptureError`` when the pin is not streaming, on a fatal streaming error
    ///   (EIO) or a disconnect (ENODEV), both of which cancel held frames and stop the stream,
    ///   and ``CaptureError/Kind/endOfStream`` when the driver says the stream has ended (EPIPE).
    ///
    /// A source change the pin follows also returns false for that wait (the pin restarted,
    /// or waits for a signal): ``formatGeneration`` moved on and ``format`` is the new one, so
    /// no frame of a new format comes unannounced. ``nextEvent(timeout:keepLeadingEdge:)`` says more.
    public func advance(timeout: Duration = .seconds(2)) throws(CaptureError) -> Bool {
        let outcome = try advance(timeout: timeout, clone: .edgeOnly)
        switch consume outcome {
        case .timedOut: return false
        case .woken: return false
        case .advanced: return true
        case .frame: return true
        case .formatChanged: return false
        case .noSignal: return false
        }
    }

    /// Who references a newly dequeued frame.
    enum Holders {
        /// The leading edge only (``advance(timeout:)``).
        case edgeOnly
        /// The leading edge and a pointer for the caller (``next(timeout:keepLeadingEdge:)``).
        case edgeAndPointer
        /// A pointer for the caller only; the edge lets go of its previous frame.
        case pointerOnly
    }

    /// What ``advance(timeout:clone:)`` hands back.
    enum Outcome: ~Copyable {
        case timedOut
        /// stop() or wake() ended the wait.
        case woken
        /// The edge moved; no pointer was asked for.
        case advanced
        /// The edge moved (or, with `.pointerOnly`, a frame was taken) and here is its pointer.
        case frame(StreamPointer)
        /// The pin followed a source change and streams in a new format.
        case formatChanged(FormatChange)
        /// The pin followed a source change and found no signal.
        case noSignal(SignalLoss)
    }

    /// Nanoseconds in `timeout`, clamped to 0...; nil for a timeout too long to matter (≥ 100
    /// years), which waits without a deadline.
    static func nanoseconds(_ timeout: Duration) -> Int64? {
        let (seconds, attoseconds) = timeout.components
        if seconds < 0 { return 0 }
        if seconds >= 100 * 365 * 86_400 { return nil }
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    /// - Parameter ready: what a poll the caller already made said of the device (a PinGroup's
    ///   one poll over all its pins): the first round uses it instead of polling again.
    func advance(timeout: Duration, clone: Holders, ready: PollEvents? = nil) throws(CaptureError) -> Outcome {
        var ready = ready
        var deadline = WaitDeadline(timeout)
        var waitedForStarvation = false
        var polled = false
        var descriptor = BufferDescriptor(index: 0, bufferType: bufferType, memory: core.streamMemoryKind)
        while true {
            // The stream this round waits on: a buffer dequeued below is accepted only if it
            // still streams (a stop, or a stop and a start, on another thread ends it).
            var epoch = core.fedEpoch.load(ordering: .acquiring)
            if epoch == 0 || waitedForStarvation {
                switch prepare(&waitedForStarvation) {
                case .fail(let error):
                    // stop() between two polls of this wait ends it, as a wake-up would.
                    if polled, error.kind == .invalidState, wasStoppedByCaller { return .woken }
                    throw error
                case .runHandlers(let handlers):
                    for handler in handlers { handler() }
                    deadline.timePassed()
                    continue
                case .follow:
                    return try followSource(deadline: deadline.absolute)
                case .ready(let current): epoch = current
                }
            }
            // The first poll runs even with no time left, so a zero timeout still takes a
            // frame that is ready.
            let milliseconds = deadline.pollMilliseconds()
            let events: PollEvents
            polled = true
            if let given = ready {
                ready = nil
                events = given
            } else {
                let subscribed = core.subscribedToSource.load(ordering: .relaxed)
                do {
                    let answer = try device.poll(events: subscribed ? [.input, .error, .priority] : [.input, .error],
                                                 wakeup: core.wakeup, timeoutMilliseconds: milliseconds, deadline: deadline.absolute)
                    if answer.woken, core.wakeup.drain().woken { return .woken }
                    events = answer.events
                } catch {
                    if let failure = failUnlessStopped(error) { throw failure }
                    return .woken
                }
            }
            if events.isEmpty {
                if deadline.hasPassed { return .timedOut }
                continue
            }
            // Events before frames: a frame that is ready beside a source change may already
            // have the new format, so it is not dequeued for delivery.
            if events.contains(.priority) {
                let event: DeviceEvent?
                do throws(V4L2Error) {
                    event = try takeSourceChangeEvent()
                } catch {
                    if let failure = failUnlessStopped(error) { throw failure }
                    return .woken
                }
                if let event {
                    beginSourceChange(event)
                    return try followSource(deadline: deadline.absolute)
                }
                if events.isDisjoint(with: [.input, .error]) {
                    if deadline.hasPassed { return .timedOut }
                    continue
                }
            }
            descriptor.memory = core.streamMemoryKind
            let dequeued: Bool
            do {
                dequeued = try device.dequeue(into: &descriptor)
            } catch {
                if error.errno == .brokenPipe {
                    throw CaptureError(.endOfStream, "\(device.path): the stream has ended (VIDIOC_DQBUF: EPIPE, the driver's last buffer was dequeued)", underlying: error)
                }
                if let failure = failUnlessStopped(error) { throw failure }
                return .woken
            }
            guard dequeued else {
                if events.contains(.error) {
                    if let failure = failUnlessStopped(V4L2Error(device: device.path, operation: "poll", errno: nil,
                                                                 detail: "the driver reported an error (POLLERR) and has no buffer to dequeue")) {
                        throw failure
                    }
                    return .woken
                }
                // EAGAIN after a readable poll: the deadline bounds how often that repeats.
                if deadline.hasPassed { return .timedOut }
                continue
            }
            let accepted = accept(&descriptor, clone: clone, epoch: epoch)
            switch consume accepted {
            case .some(let outcome): return outcome
            case .none: continue
            }
        }
    }

    enum Step {
        /// Streaming, in this epoch.
        case ready(UInt64)
        case fail(CaptureError)
        case runHandlers([@Sendable () -> Void])
        /// The pin is between a source change and its restart, or waits for a signal.
        case follow
    }

    /// Before waiting: the pin must be streaming; buffers whose QBUF failed are retried; when
    /// the consumer holds every buffer the starvation policy applies.
    func prepare(_ waitedForStarvation: inout Bool) -> Step {
        core.state.withLock { state -> Step in
            switch state.machine.waitDecision() {
            case .ready: break
            case .follow: return .follow
            case .fail(let error): return .fail(error)
            case .notStreaming:
                return .fail(CaptureError(.invalidState, "\(device.path): the pin is not streaming; call start() first"))
            }
            let epoch = state.machine.epoch
            if state.pendingRequeue {
                state.pendingRequeue = false
                for index in state.slots.indices where state.slots[index].state == .free {
                    _ = PinCore.queue(&state, index: index, device: device, bufferType: bufferType)
                }
                core.publish(state)
            }
            if state.queuedCount > 0 {
                waitedForStarvation = false
                return .ready(epoch)
            }
            // Starved: the trailing window gives way first.
            if let entry = state.trailing.popFirst() {
                core.dropReference(&state, slot: entry.slot, generation: entry.generation)
                core.publish(state)
                return .runHandlers([])
            }
            // Then the frame under the leading edge, when only the edge holds it: the edge is
            // about to move on, and otherwise a pin whose every other buffer is held (or that
            // has a single buffer) could never dequeue again.
            if let edge = state.leadingEdge, edge.slot < state.slots.count,
               state.slots[edge.slot].generation == edge.generation, state.slots[edge.slot].state == .held,
               state.slots[edge.slot].references == 1 {
                state.leadingEdge = nil
                core.dropReference(&state, slot: edge.slot, generation: edge.generation)
                core.publish(state)
                return .runHandlers([])
            }
            switch core.starvationPolicy {
            case .block:
                if !waitedForStarvation {
                    state.statistics.starvationWaits += 1
                    waitedForStarvation = true
                }
                state.starvedWaiter = true
                return .ready(epoch)
            case .cancelOldestUnlocked:
                var oldest: Int?
                for index in state.slots.indices where state.slots[index].state == .held && state.slots[index].locks == 0 {
                    if let current = oldest, state.slots[current].dequeueOrder <= state.slots[index].dequeueOrder { continue }
                    oldest = index
                }
                guard let victim = oldest else {
                    if !waitedForStarvation {
                        state.statistics.starvationWaits += 1
                        waitedForStarvation = true
                    }
                    state.starvedWaiter = true
                    return .ready(epoch)
                }
                if let edge = state.leadingEdge, edge.slot == victim { state.leadingEdge = nil }
                let handlers = core.cancel(&state, slot: victim)
                state.statistics.starvationCancels += 1
                _ = PinCore.queue(&state, index: victim, device: device, bufferType: bufferType)
                core.publish(state)
                return .runHandlers(handlers)
            }
        }
    }

    // MARK: - Stream pointers

    /// A new reference to the frame at the leading edge, or nil before the first frame.
    public func cloneLeadingEdge() -> StreamPointer? {
        let taken = core.state.withLock { state -> (Int, UInt32, UInt64, UnsafeMutablePointer<FrameRecord>)? in
            guard let edge = state.leadingEdge, edge.slot < state.slots.count,
                  state.slots[edge.slot].generation == edge.generation, state.slots[edge.slot].state == .held,
                  let record = state.slots[edge.slot].record else { return nil }
            state.slots[edge.slot].references += 1
            state.records.retain(record)
            return (edge.slot, edge.generation, PinCore.issuePointer(&state), record)
        }
        guard let (slot, generation, id, record) = taken else { return nil }
        return StreamPointer(core: core, slot: slot, generation: generation, id: id, record: record)
    }

    /// Advances the leading edge and returns a reference to the new frame; nil on timeout or
    /// when ``stop()`` or ``wake()`` ended the wait.
    ///
    /// A source change the pin follows makes that wait return nil too: the pin restarted (or
    /// waits for a signal, when later waits return nil at their timeout), ``format`` is the new
    /// one and ``formatGeneration`` moved on, as does ``FrameInfo/formatGeneration`` of the
    /// frames that follow. ``nextEvent(timeout:keepLeadingEdge:)`` reports the change itself.
    ///
    /// - Parameters:
    ///   - timeout: how long to wait for a frame, one deadline for the whole wait.
    ///   - keepLeadingEdge: true (the AVStream default) keeps the leading edge on the
    ///   new frame until the next advance, so the frame returns to the driver only after both
    ///   the returned pointer is gone and the edge has moved on. false hands the edge's own
    ///   reference to the returned pointer: the frame is queued again (QBUF) the moment that
    ///   pointer goes, which keeps one more buffer with the driver while the consumer waits
    ///   (what a dump loop wants). Then ``cloneLeadingEdge()`` returns nil and the trailing
    ///   window does not fill.
    public func next(timeout: Duration = .seconds(2), keepLeadingEdge: Bool = true) throws(CaptureError) -> StreamPointer? {
        let outcome = try advance(timeout: timeout, clone: keepLeadingEdge ? .edgeAndPointer : .pointerOnly)
        switch consume outcome {
        case .frame(let pointer): return pointer
        case .timedOut: return nil
        case .woken: return nil
        case .advanced: return nil
        case .formatChanged: return nil
        case .noSignal: return nil
        }
    }

    /// The next frame, or the source change that comes before the frames of a new format, or
    /// the loss of the signal; nil when the timeout passed, or ``stop()`` or ``wake()`` ended
    /// the wait. `keepLeadingEdge` as for ``next(timeout:keepLeadingEdge:)``.
    ///
    /// After ``PinEvent/noSignal(_:)`` the pin is stopped (not streaming) and each wait returns
    /// nil at its timeout while there is no signal; the caller decides when to give up (with
    /// ``stop()``). When the signal is back the pin restarts and the wait returns
    /// ``PinEvent/formatChanged(_:)``, also when the format is the one before the loss.
    ///
    /// A restart needs the driver's buffers back (REQBUFS 0), which happens once no stream
    /// pointer holds a frame of the old stream: while some do, waits return nil at their timeout.
    public func nextEvent(timeout: Duration = .seconds(2), keepLeadingEdge: Bool = true) throws(CaptureError) -> PinEvent? {
        try nextEvent(timeout: timeout, keepLeadingEdge: keepLeadingEdge, ready: nil)
    }

    /// ``nextEvent(timeout:keepLeadingEdge:)`` after a poll of the caller's own (a PinGroup's)
    /// said `ready` of the device: no second poll before the DQBUF.
    func nextEvent(timeout: Duration, keepLeadingEdge: Bool, ready: PollEvents?) throws(CaptureError) -> PinEvent? {
        let outcome = try advance(timeout: timeout, clone: keepLeadingEdge ? .edgeAndPointer : .pointerOnly, ready: ready)
        switch consume outcome {
        case .frame(let pointer): return .frame(pointer)
        case .formatChanged(let change): return .formatChanged(change)
        case .noSignal(let loss): return .noSignal(loss)
        case .timedOut: return nil
        case .woken: return nil
        case .advanced: return nil
        }
    }
}
