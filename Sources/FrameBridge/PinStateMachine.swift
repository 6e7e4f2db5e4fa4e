import V4L2

/// The life of a ``CapturePin`` as a value: its states, and events that return what the pin must
/// do, which the pin runs outside this type (the device calls, the handlers), as swift-nio's
/// `NIOAsyncWriter` state machine does. Pure: no device, no lock, no clock; the pin keeps it
/// inside its locked state and feeds it events.
///
/// Two races the states make impossible to express:
/// - a `stop()` while a start (or the restart after a source change) sets up buffers outside
///   the lock is the state ``State/stopRequested``, and the starter's commit then answers
///   ``StartCommit/abandon`` instead of STREAMON: the pin never streams after `stop()` returned;
/// - a buffer dequeued outside the lock belongs to the stream it was dequeued from (``epoch``):
///   when a stop came in between, ``DequeueDecision/discard`` drops it without counting a driver
///   violation or a sequence.
struct PinStateMachine: Sendable {
    enum State: Sendable {
        /// Never streamed, or a first start failed.
        case idle
        /// A start claimed the pin and sets up buffers outside the lock; `restart` after a source change.
        case starting(restart: Bool)
        /// `stop()` came while starting: the starter undoes its set-up instead of streaming.
        case stopRequested
        case streaming
        /// A source change was seen: STREAMOFF is done; the restart runs once the buffers are back.
        case restartPending
        /// The source has no signal: the pin waits for the next source-change event.
        /// `reported` once the consumer was told.
        case noSignal(SignalLoss, reported: Bool)
        /// Stopped by the caller.
        case stopped
        /// Stopped by a fatal error (a disconnect, EIO, a restart that could not be made).
        case failed(CaptureError)
    }

    private(set) var state: State = .idle {
        didSet {
            isStreaming = if case .streaming = state { true } else { false }
            switch state {
            case .restartPending, .noSignal, .starting(restart: true): isFollowingSource = true
            default: isFollowingSource = false
            }
        }
    }
    /// Moves on with each STREAMON. A buffer dequeued in one stream is not accepted in another.
    private(set) var epoch: UInt64 = 0

    // MARK: - Derived

    /// Stored beside the state (set with it): the per-frame paths read a flag, not a switch
    /// over an enum with payloads.
    private(set) var isStreaming = false

    /// Between a source change and its restart, or waiting for a signal.
    private(set) var isFollowingSource = false

    var isRestartPending: Bool {
        if case .restartPending = state { return true }
        return false
    }

    /// Whether `stop()` ended the pin (as opposed to a failure, or never starting).
    var wasStoppedByCaller: Bool {
        switch state {
        case .stopped, .stopRequested: return true
        default: return false
        }
    }

    var failure: CaptureError? {
        if case .failed(let error) = state { return error }
        return nil
    }

    var signalLoss: SignalLoss? {
        if case .noSignal(let loss, _) = state { return loss }
        return nil
    }

    /// Whether the streaming resources (allocator, memory) may be freed: no stream runs or is being set up.
    var isOver: Bool {
        switch state {
        case .stopped, .failed, .restartPending, .noSignal: return true
        case .idle, .starting, .stopRequested, .streaming: return false
        }
    }

    // MARK: - Starting

    enum StartDecision: Equatable, Sendable {
        /// The pin is claimed: set up outside the lock, then ``commitStart()``.
        case proceed
        case reject(StartRejection)
    }

    enum StartRejection: Equatable, Sendable {
        case alreadyStreaming
        case startingElsewhere
        case followingSourceChange
        /// A restart found the pin no longer following the change: stop() ended it.
        case stoppedWhileFollowing
        /// A restart while the source has no signal.
        case waitingForSignal
        /// Stream pointers of the previous stream still hold frames.
        case framesStillHeld
    }

    /// start(), or with `restart` the restart after a source change. `resourcesHeld`: the
    /// previous stream's allocator is still there (pointers hold its frames).
    mutating func start(restart: Bool, resourcesHeld: Bool) -> StartDecision {
        switch state {
        case .streaming:
            return .reject(.alreadyStreaming)
        case .starting, .stopRequested:
            return .reject(.startingElsewhere)
        case .restartPending where restart:
            if resourcesHeld { return .reject(.framesStillHeld) }
            state = .starting(restart: true)
            return .proceed
        case .restartPending, .noSignal:
            return .reject(restart ? .waitingForSignal : .followingSourceChange)
        case .idle, .stopped, .failed:
            if restart { return .reject(.stoppedWhileFollowing) }
            if resourcesHeld { return .reject(.framesStillHeld) }
            state = .starting(restart: false)
            return .proceed
        }
    }

    enum StartCommit: Equatable, Sendable {
        /// Queue the buffers and STREAMON, then ``started()`` or ``startFailed(_:)``.
        case streamOn
        /// stop() came meanwhile: undo the set-up; the pin is stopped.
        case abandon
        /// Not starting: a programmer error in the pin.
        case invalid
    }

    /// The set-up is done: may the stream start?
    mutating func commitStart() -> StartCommit {
        switch state {
        case .starting: return .streamOn
        case .stopRequested:
            state = .stopped
            return .abandon
        default: return .invalid
        }
    }

    /// STREAMON succeeded.
    mutating func started() {
        guard case .starting = state else { return }
        state = .streaming
        epoch &+= 1
    }

    /// The set-up or STREAMON failed. A first start leaves the pin startable again; a restart
    /// after a source change fails the pin with `error`; a stop() meanwhile wins.
    mutating func startFailed(_ error: CaptureError) {
        switch state {
        case .starting(restart: false): state = .idle
        case .starting(restart: true): state = .failed(error)
        case .stopRequested: state = .stopped
        default: break
        }
    }

    // MARK: - Stopping and failing

    enum StopAction: Equatable, Sendable {
        /// STREAMOFF, then cancel the held frames.
        case streamOffAndCancel
        /// Not streaming: cancel what is held (nothing, usually).
        case cancel
        /// A start is setting up: it undoes itself at its commit.
        case none
    }

    mutating func stop() -> StopAction {
        switch state {
        case .streaming:
            state = .stopped
            return .streamOffAndCancel
        case .starting, .stopRequested:
            state = .stopRequested
            return .none
        case .idle, .restartPending, .noSignal, .stopped:
            state = .stopped
            return .cancel
        case .failed:
            return .cancel
        }
    }

    enum FailAction: Sendable {
        /// STREAMOFF and cancel the held frames; throw `error`.
        case streamOffAndCancel(CaptureError)
        /// Between streams (following a source change): the pin is failed; throw `error`.
        case record(CaptureError)
        /// The pin had failed already with this (first) error.
        case alreadyFailed(CaptureError)
        /// No stream to fail: stop() ended it (the error is its consequence), or none started.
        case notStreaming
    }

    /// A fatal error while streaming (or following a source change).
    mutating func fail(_ error: CaptureError) -> FailAction {
        switch state {
        case .streaming:
            state = .failed(error)
            return .streamOffAndCancel(error)
        case .restartPending, .noSignal, .starting(restart: true):
            state = .failed(error)
            return .record(error)
        case .failed(let first):
            return .alreadyFailed(first)
        case .stopped, .stopRequested, .idle, .starting(restart: false):
            return .notStreaming
        }
    }

    // MARK: - Source changes

    /// A source-change event. While streaming: STREAMOFF and cancel (true), then the restart;
    /// while waiting for a signal: the signal may be back, so the restart is tried again.
    mutating func sourceChanged() -> Bool {
        switch state {
        case .streaming:
            state = .restartPending
            return true
        case .noSignal:
            state = .restartPending
            return false
        default:
            return false
        }
    }

    /// The restart found no signal (false when stop() came meanwhile).
    mutating func signalLost(_ loss: SignalLoss) -> Bool {
        guard case .restartPending = state else { return false }
        state = .noSignal(loss, reported: false)
        return true
    }

    enum FollowStep: Sendable {
        /// No longer following: stop() ended it (the wait returns as woken).
        case stopped
        /// The failure that ended the follow-up.
        case failed(CaptureError)
        /// The buffers are back: restart.
        case restart
        /// Stream pointers still hold frames of the old stream.
        case waitForBuffers
        /// Tell the consumer once.
        case report(SignalLoss)
        case waitForSignal
    }

    /// The next step of following a source change. `resourcesHeld`: the old stream's allocator
    /// is not freed yet (pointers hold frames, or its teardown runs).
    mutating func followStep(resourcesHeld: Bool) -> FollowStep {
        switch state {
        case .restartPending: return resourcesHeld ? .waitForBuffers : .restart
        case .noSignal(let loss, reported: false):
            state = .noSignal(loss, reported: true)
            return .report(loss)
        case .noSignal: return .waitForSignal
        case .failed(let error): return .failed(error)
        case .idle, .starting, .stopRequested, .streaming, .stopped: return .stopped
        }
    }

    // MARK: - Waiting and dequeueing

    enum WaitDecision: Sendable {
        case ready
        /// Following a source change: the wait runs the follow-up.
        case follow
        case fail(CaptureError)
        /// Not streaming: stopped by the caller (true) or never started.
        case notStreaming(stoppedByCaller: Bool)
    }

    /// Before a wait for a frame.
    func waitDecision() -> WaitDecision {
        switch state {
        case .streaming: return .ready
        case .restartPending, .noSignal, .starting(restart: true): return .follow
        case .failed(let error): return .fail(error)
        case .stopped, .stopRequested: return .notStreaming(stoppedByCaller: true)
        case .idle, .starting(restart: false): return .notStreaming(stoppedByCaller: false)
        }
    }

    enum DequeueDecision: Equatable, Sendable {
        /// The buffer is this stream's: validate and deliver it.
        case accept
        /// The stream it came from is over (a stop or a source change came between DQBUF and
        /// this): drop it uncounted.
        case discard
    }

    /// A buffer came back from DQBUF, dequeued during stream `epoch`.
    func dequeued(epoch dequeuedIn: UInt64) -> DequeueDecision {
        isStreaming && dequeuedIn == epoch ? .accept : .discard
    }
}
