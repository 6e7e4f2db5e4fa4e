import FrameBridge
import V4L2

/// framedump's one capture loop, over a ``FrameSource``: one device's pin (``CaptureSession``)
/// or a ``PinGroup`` over several (``MultiCaptureSession``).
///
/// Per turn: one wait up to the earliest frame deadline of the devices still streaming (woken
/// at once by the stop flag), then the event: a frame is written to its device's sinks and
/// given back to the driver; a source event is followed (a new segment, a wait for the
/// signal); an ended stream is reconnected (`--reconnect`) or ends the device; a passed
/// deadline ends its device. With only the raw sink nothing is allocated per frame.
///
/// How a device's failure ends things is the ``Scope``: the whole capture, thrown (one
/// device), or only that device's stream, recorded in its summary (several; with
/// allOrNothing, every device).
struct CaptureLoop {
    enum Scope {
        /// A failure ends the capture: it is thrown, through `fatal`.
        case capture
        /// A failure ends the device's stream (``DeviceCapture/failure``); with allOrNothing
        /// it ends every device's, thrown through `fatal`.
        case device(allOrNothing: Bool)
    }

    let captures: [DeviceCapture]
    /// The captures the source delivers, by their place in the source.
    let devices: [Int]
    let source: any FrameSource
    let scope: Scope
    let stopFlag: StopFlag
    var progress: ProgressLine?
    var notice: ((String) -> Void)?
    /// Called after each frame is written, with the capture's index and its frames so far.
    var afterFrame: ((Int, Int) -> Void)?
    /// Called after a reconnect replaced a capture's pin.
    var afterReconnect: (() -> Void)?
    var skew: SkewMeter?
    /// When the capture began (CLOCK_MONOTONIC), for the progress line's rate.
    let startTime: Int64

    /// Runs until every device is done or a stop is requested; returns whether it was
    /// interrupted. `fatal` abandons the capture and adds its summary to the error it throws.
    func run(fatal: (FrameDumpError) -> FrameDumpError) throws(FrameDumpError) -> Bool {
        func end(_ c: Int, _ error: FrameDumpError) throws(FrameDumpError) {
            switch scope {
            case .capture:
                throw fatal(error)
            case .device(let allOrNothing):
                captures[c].failure = error
                captures[c].abandon()
                if allOrNothing {
                    throw fatal(FrameDumpError(.runtime, "\(error.message) (--all-or-nothing: every device stopped)"))
                }
            }
        }
        /// Ends each device whose deadline passed.
        func endOverdue() throws(FrameDumpError) {
            let now = Clock.coarseNanoseconds()
            for (g, c) in devices.enumerated() where !captures[c].isDone && now >= captures[c].deadline {
                source.retire(g)
                try end(c, .runtime(CaptureReport.deadlineMessage(captures[c])))
            }
        }

        while devices.contains(where: { !captures[$0].isDone }) {
            if stopFlag.isRequested { return true }
            // One wait up to the earliest device's deadline: the stop flag wakes it.
            var deadline = Int64.max
            for c in devices where !captures[c].isDone {
                deadline = min(deadline, captures[c].deadline)
            }
            // The pointer holds the frame's only reference: it is queued again the moment it
            // is released after the write, not at the next advance.
            var frame: StreamPointer? = nil
            let event: FrameSourceEvent?
            do {
                event = try source.next(timeout: .nanoseconds(max(0, deadline - Clock.coarseNanoseconds())), frame: &frame)
            } catch {
                throw fatal(FrameDumpError(.runtime, "\(error.description) (--all-or-nothing: every device stopped)"))
            }
            switch event {
            case nil:
                try endOverdue()
            case .ended(let g, let error)?:
                let c = devices[g]
                let capture = captures[c]
                guard !capture.isDone else { continue }
                guard error.kind == .disconnected, capture.options.reconnect, source.canReconnect else {
                    try end(c, FrameDumpError(.runtime, CaptureReport.endMessage(capture, error)))
                    continue
                }
                progress?.clear()
                do throws(FrameDumpError) {
                    guard try capture.reconnect(stopFlag: stopFlag) else { return true }
                } catch {
                    throw fatal(error)
                }
                afterReconnect?()
            case .source(let g, let sourceEvent)?:
                let c = devices[g]
                let capture = captures[c]
                guard !capture.isDone else { continue }
                let action = capture.handle(sourceEvent)
                progress?.clear()
                for line in capture.takeNotices() { notice?(line) }
                switch action {
                case .goOn: break
                case .stop(let message):
                    notice?(message)
                    source.retire(g)
                case .fail(let error):
                    source.retire(g)
                    try end(c, error)
                }
            case .frame(let g)?:
                guard let pointer = frame.take() else {
                    try endOverdue()
                    continue
                }
                let c = devices[g]
                let capture = captures[c]
                guard !capture.isDone else { continue }
                let timestamp = pointer.info.timestampNanoseconds
                do throws(FrameDumpError) {
                    guard try capture.write(pointer) else { continue }
                } catch {
                    source.retire(g)
                    try end(c, error)
                    continue
                }
                skew?.record(device: c, timestamp: timestamp)
                afterFrame?(c, capture.framesWritten)
                if capture.framesWritten >= capture.options.count { source.retire(g) }
                if let progress { show(progress, capture) }
            }
        }
        return false
    }

    /// The progress line: frames and rate of one device, or each device's frames.
    private func show(_ line: ProgressLine, _ capture: DeviceCapture) {
        let now = Clock.coarseNanoseconds()
        guard line.isDue(now: now) else { return }
        let total = captures[0].options.count
        let seconds = Double(now - startTime) / 1e9
        switch scope {
        case .capture:
            line.show(frames: capture.framesWritten, total: total,
                      fps: seconds > 0 ? Double(capture.framesWritten) / seconds : 0,
                      dropped: capture.pin.statistics.dropped, now: now)
        case .device:
            var dropped = 0
            for capture in captures { dropped += capture.pin.statistics.dropped }
            line.show(devices: captures.map(\.framesWritten), total: total, seconds: seconds, dropped: dropped, now: now)
        }
    }
}
