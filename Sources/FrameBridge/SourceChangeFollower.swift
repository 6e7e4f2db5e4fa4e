import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Following source changes

extension CapturePin {
    /// Subscribes to V4L2_EVENT_SOURCE_CHANGE for the current input when it has DV timings or
    /// standards and the configuration follows source changes. A device without events
    /// (EINVAL, ENOTTY) has no change to follow: nothing is subscribed.
    func subscribeToSourceChanges() throws(CaptureError) {
        guard configuration.sourceChanges == .follow, live.withLock({ $0.subscription == nil }) else { return }
        let input: UInt32
        let capabilities: InputCapabilities
        do throws(V4L2Error) {
            input = try device.currentInput()
            guard let entry = try device.inputs().first(where: { $0.index == input }) else { return }
            capabilities = entry.capabilityFlags
        } catch {
            // No inputs to ask about (a memory-to-memory or odd device): no live source.
            return
        }
        let digital = capabilities.contains(.dvTimings)
        guard digital || capabilities.contains(.standards) else { return }
        do throws(V4L2Error) {
            try device.subscribe(.sourceChange, id: input)
        } catch {
            if error.errno == .invalidArgument || error.errno == .inappropriateIOCTLForDevice { return }
            throw CaptureError(.device, "\(device.path): VIDIOC_SUBSCRIBE_EVENT (source change, input \(input)) failed: \(error); set PinConfiguration.sourceChanges to .ignore to capture without following source changes",
                               underlying: error)
        }
        live.withLock { $0.subscription = SourceSubscription(input: input, digital: digital) }
        core.subscribedToSource.store(true, ordering: .releasing)
    }

    func unsubscribeFromSourceChanges() {
        let subscription = live.withLock { live -> SourceSubscription? in
            defer { live.subscription = nil }
            return live.subscription
        }
        guard let subscription else { return }
        core.subscribedToSource.store(false, ordering: .releasing)
        try? device.unsubscribe(.sourceChange, id: subscription.input)
    }

    /// Drains the event queue (DQEVENT until ENOENT); the last source-change event, if any.
    func takeSourceChangeEvent() throws(V4L2Error) -> DeviceEvent? {
        var found: DeviceEvent?
        // Bounded: a driver that never says ENOENT must not keep the consumer here.
        for _ in 0..<64 {
            guard let event = try device.dequeueEvent() else { break }
            if event.kind == .sourceChange { found = event }
        }
        return found
    }

    /// The event arrived while streaming: STREAMOFF, held frames cancelled as stop() does, and
    /// the buffers given back once no pointer holds one. Frames the driver filled after the
    /// event are dequeued and dropped (counted), never delivered.
    func beginSourceChange(_ event: DeviceEvent) {
        var handlers: [@Sendable () -> Void] = []
        var dropped = 0
        let teardown = core.state.withLock { state -> PinCore.Teardown? in
            guard state.machine.sourceChanged() else { return nil }
            var descriptor = BufferDescriptor(index: 0, bufferType: bufferType, memory: core.streamMemoryKind)
            while dropped < state.slots.count, (try? device.dequeue(into: &descriptor)) == true {
                dropped += 1
                let index = Int(descriptor.index)
                if index >= 0, index < state.slots.count, state.slots[index].state == .queued {
                    PinCore.setSlot(&state, index, .free)
                }
            }
            _ = try? device.streamOff(bufferType)
            state.statistics.droppedAtSourceChange += dropped
            handlers = core.cancelHeldFrames(&state)
            core.publish(state)
            return core.takeTeardownIfDone(&state)
        }
        live.withLock { live in
            live.pendingEvent = event
            live.pendingDropped = dropped
            live.pendingAfterNoSignal = false
        }
        for handler in handlers { handler() }
        teardown?.run()
    }

    /// Ends the follow-up with a failure: the pin is failed, as a driver error while streaming
    /// makes it (unless stop() ended it first).
    func failFollowing(_ error: CaptureError) -> CaptureError {
        let failure = record(failure: error)
        return failure.kind == .invalidState && wasStoppedByCaller ? error : failure
    }

    /// Runs the follow-up of a source change on the consumer's wait, up to `deadline`:
    /// the restart once the buffers are back, the report of a lost signal, the wait for the
    /// next event while there is none.
    func followSource(deadline: Int64?) throws(CaptureError) -> Outcome {
        while true {
            let step = core.state.withLock { state in
                state.machine.followStep(resourcesHeld: state.allocator != nil || state.teardownsRunning > 0)
            }
            var milliseconds: Int32 = -1
            switch step {
            case .stopped: return .woken
            case .failed(let error): throw error
            case .report(let loss): return .noSignal(loss)
            case .restart:
                if let outcome = try restartAfterSourceChange() { return outcome }
                continue
            case .waitForBuffers, .waitForSignal:
                if let deadline {
                    let left = deadline - MonotonicClock.nanoseconds()
                    milliseconds = left <= 0 ? 0 : Int32(clamping: (left + 999_999) / 1_000_000)
                }
                // Stream pointers let go of their frames on other threads, with no descriptor
                // to wait on: the wait for the buffers looks again every 10 ms.
                if case .waitForBuffers = step { milliseconds = milliseconds < 0 ? 10 : min(milliseconds, 10) }
            }
            // POLLPRI only: for POLLIN, vb2 answers POLLERR while the queue is not streaming.
            let answer: (events: PollEvents, woken: Bool)
            do throws(V4L2Error) {
                answer = try device.poll(events: [.priority], wakeup: core.wakeup, timeoutMilliseconds: milliseconds)
            } catch {
                throw failFollowing(CaptureError(error))
            }
            if answer.woken, core.wakeup.drain().woken { return .woken }
            if answer.events.contains(.priority) {
                let event: DeviceEvent?
                do throws(V4L2Error) {
                    event = try takeSourceChangeEvent()
                } catch {
                    throw failFollowing(CaptureError(error))
                }
                if let event {
                    let wasLost = core.state.withLock { state -> Bool in
                        let wasLost = state.machine.signalLoss != nil
                        _ = state.machine.sourceChanged()
                        core.publish(state)
                        return wasLost
                    }
                    live.withLock { live in
                        live.pendingEvent = event
                        if wasLost { live.pendingAfterNoSignal = true }
                    }
                    continue
                }
            } else if !answer.events.isDisjoint(with: [.error, .hangUp]) {
                let disconnected = device.isDisconnected
                throw failFollowing(CaptureError(disconnected ? .disconnected : .fatalStreamingError,
                                                 "\(device.path): \(disconnected ? "the device was disconnected" : "the driver reported an error (POLLERR)") while the pin waited for its source (after a source change)"))
            }
            if let deadline, MonotonicClock.nanoseconds() >= deadline { return .timedOut }
        }
    }

    /// Detects and applies the new timings or standard, sets the format again (the size from
    /// the source; pixel format and field as configured), runs allocator selection again and
    /// starts. Nil when there is no signal (the pin then waits for one).
    func restartAfterSourceChange() throws(CaptureError) -> Outcome? {
        let (subscription, previous, selection, event, dropped, afterNoSignal) = live.withLock { live in
            (live.subscription, live.format, live.selection, live.pendingEvent, live.pendingDropped, live.pendingAfterNoSignal)
        }
        guard let subscription, let selection else {
            throw failFollowing(CaptureError(.invalidState, "\(device.path): a source change without a subscription or a selection to restart with"))
        }
        var detected: DetectedSource
        var newFormat: ImageFormat
        var interval: Fraction?
        var attempts = 0
        while true {
            attempts += 1
            detected = try detectSource(subscription, apply: true)
            if let loss = detected.loss {
                let waiting = core.state.withLock { state -> Bool in
                    defer { core.publish(state) }
                    return state.machine.signalLost(loss)
                }
                if waiting { live.withLock { $0.pendingAfterNoSignal = true } }
                return nil
            }
            (newFormat, interval) = try setFormatAfterSourceChange(previous: previous, input: subscription.input)
            // Applying the timings can itself queue a source-change event (vivid moves its
            // colorspace control with the timings, and that control sends one). Such events
            // are dropped here, before STREAMON; if the source really changed meanwhile, it
            // no longer matches what was applied, and the restart starts over.
            let queued: DeviceEvent?
            do throws(V4L2Error) {
                queued = try takeSourceChangeEvent()
            } catch {
                throw failFollowing(CaptureError(error))
            }
            guard queued != nil, attempts < 4 else { break }
            let now = try detectSource(subscription, apply: false)
            if now.loss == nil, now.timings == detected.timings, now.standard.map({ $0 & (detected.standard ?? 0) != 0 }) ?? true { break }
        }
        live.withLock { live in
            live.format = newFormat
            live.frameInterval = interval
        }
        let result: AllocatorSelectionResult
        do throws(CaptureError) {
            result = try begin(selection, restart: true)
        } catch {
            // stop() while this restart ran: the caller ended the stream.
            if wasStoppedByCaller { return .woken }
            throw failFollowing(error)
        }
        let framing = self.framing
        let generation = formatGeneration
        let change = live.withLock { live -> FormatChange in
            let change = FormatChange(input: subscription.input, changes: event?.sourceChanges ?? [], previous: previous, format: newFormat,
                                      frameInterval: interval, framing: framing, selection: result, timings: detected.timings, standard: detected.standard,
                                      generation: generation, framesDropped: dropped, afterNoSignal: afterNoSignal,
                                      eventTimestampNanoseconds: event?.timestampNanoseconds ?? 0,
                                      restartedNanoseconds: MonotonicClock.nanoseconds())
            live.lastChange = change
            live.pendingEvent = nil
            live.pendingDropped = 0
            live.pendingAfterNoSignal = false
            return change
        }
        return .formatChanged(change)
    }

    struct DetectedSource {
        var timings: DVTimings?
        var standard: UInt64?
        var loss: SignalLoss?
    }

    /// What the input receives now: QUERY_DV_TIMINGS on a DV input (ENOLINK, ENOLCK, ERANGE: no
    /// signal) or QUERYSTD on an analog one (0: no signal), and the input's status bits. With
    /// `apply`, the detected timings or standard are set (S_DV_TIMINGS, S_STD).
    func detectSource(_ subscription: SourceSubscription, apply: Bool) throws(CaptureError) -> DetectedSource {
        var result = DetectedSource()
        let status = (try? device.inputs())?.first { $0.index == subscription.input }?.statusFlags
        do throws(V4L2Error) {
            if subscription.digital {
                do throws(V4L2Error) {
                    let timings = try device.queryDVTimings()
                    result.timings = apply ? try device.setDVTimings(timings) : timings
                } catch {
                    guard SignalDetection.isSignalLoss(error) else { throw error }
                    result.loss = SignalLoss(input: subscription.input, status: status, detail: error.description, underlying: error)
                }
            } else {
                let standard = try device.queryStandard()
                if SignalDetection.isSignalLoss(detectedStandard: standard) {
                    result.loss = SignalLoss(input: subscription.input, status: status, detail: "\(device.path): VIDIOC_QUERYSTD detected no standard", underlying: nil)
                } else if apply {
                    if try device.standard() & standard == 0 { try device.setStandard(standard) }
                    result.standard = try device.standard()
                } else {
                    result.standard = standard
                }
            }
        } catch {
            let hint = error.errno == .resourceBusy ? " (the queue still has buffers: another handle may own it)" : ""
            throw failFollowing(CaptureError(.device, "\(device.path): following a source change of input \(subscription.input): \(error)\(hint)", underlying: error))
        }
        if result.loss == nil, let status, SignalDetection.isSignalLoss(status: status) {
            result.loss = SignalLoss(input: subscription.input, status: status, detail: "\(device.path): VIDIOC_ENUMINPUT says no signal", underlying: nil)
        }
        return result
    }

    /// G_FMT (the size the source now has), then S_FMT with the pixel format (the configured
    /// one, else the previous) and the configured field. A replaced pixel format is an error.
    func setFormatAfterSourceChange(previous: ImageFormat, input: UInt32) throws(CaptureError) -> (ImageFormat, Fraction?) {
        let newFormat: ImageFormat
        let interval: Fraction?
        let wanted = configuration.pixelFormat ?? previous.pixelFormat
        do throws(V4L2Error) {
            var request = try device.format(bufferType)
            request.pixelFormat = wanted
            request.field = configuration.field.rawValue
            request.planes = []
            newFormat = try device.setFormat(request)
            interval = try device.frameInterval(bufferType)
        } catch {
            throw failFollowing(CaptureError(.device, "\(device.path): setting the format after a source change of input \(input): \(error)", underlying: error))
        }
        guard newFormat.pixelFormat == wanted else {
            throw failFollowing(CaptureError(.invalidConfiguration,
                                             "\(device.path): VIDIOC_S_FMT after a source change to \(newFormat.width)x\(newFormat.height): the driver replaced pixel format \(wanted) with \(newFormat.pixelFormat); the new source cannot be captured as \(wanted) (stop, and start a pin with another pixel format)"))
        }
        return (newFormat, interval)
    }

    /// The poll events a ``PinGroup`` waits on for this pin.
    var groupPollEvents: PollEvents {
        // While it follows a change the queue is not streaming: POLLIN would say POLLERR.
        if core.followingSource.load(ordering: .acquiring) { return [.priority] }
        return core.subscribedToSource.load(ordering: .relaxed) ? [.input, .error, .priority] : [.input, .error]
    }

    /// Whether the pin waits to restart after a source change (a group retries it each wait).
    var isRestartPending: Bool {
        core.state.withLock { $0.machine.isRestartPending }
    }
}
