@testable import FrameBridge
import V4L2
import XCTest

/// The pin's state machine, pair by pair: every state it can reach, every event, the action it
/// answers and the state it moves to. No device: the machine is a value.
final class PinStateMachineTests: XCTestCase {
    static let firstError = CaptureError(.fatalStreamingError, "E1")
    static let secondError = CaptureError(.disconnected, "E2")
    static let loss = SignalLoss(input: 3, status: nil, detail: "L", underlying: nil)

    /// Each state, reached by the events that lead to it.
    static let states: [(name: String, make: @Sendable () -> PinStateMachine)] = [
        ("idle", { PinStateMachine() }),
        ("starting", { var m = PinStateMachine(); _ = m.start(restart: false, resourcesHeld: false); return m }),
        ("starting(restart)", { var m = streaming(); _ = m.sourceChanged(); _ = m.start(restart: true, resourcesHeld: false); return m }),
        ("stopRequested", { var m = PinStateMachine(); _ = m.start(restart: false, resourcesHeld: false); _ = m.stop(); return m }),
        ("streaming", { streaming() }),
        ("restartPending", { var m = streaming(); _ = m.sourceChanged(); return m }),
        ("noSignal", { var m = streaming(); _ = m.sourceChanged(); _ = m.signalLost(loss); return m }),
        ("noSignal(reported)", { var m = streaming(); _ = m.sourceChanged(); _ = m.signalLost(loss); _ = m.followStep(resourcesHeld: false); return m }),
        ("stopped", { var m = streaming(); _ = m.stop(); return m }),
        ("failed", { var m = streaming(); _ = m.fail(firstError); return m }),
    ]

    static func streaming() -> PinStateMachine {
        var m = PinStateMachine()
        _ = m.start(restart: false, resourcesHeld: false)
        _ = m.commitStart()
        m.started()
        return m
    }

    /// Each event, applied to a machine; what it answered, as text.
    static let events: [(name: String, apply: @Sendable (inout PinStateMachine) -> String)] = [
        ("start", { describe($0.start(restart: false, resourcesHeld: false)) }),
        ("start(held)", { describe($0.start(restart: false, resourcesHeld: true)) }),
        ("restart", { describe($0.start(restart: true, resourcesHeld: false)) }),
        ("restart(held)", { describe($0.start(restart: true, resourcesHeld: true)) }),
        ("commit", { "\($0.commitStart())" }),
        ("started", { $0.started(); return "-" }),
        ("startFailed", { $0.startFailed(secondError); return "-" }),
        ("stop", { "\($0.stop())" }),
        ("fail", { m in
            switch m.fail(secondError) {
            case .streamOffAndCancel(let error): return "streamOffAndCancel(\(error.message))"
            case .record(let error): return "record(\(error.message))"
            case .alreadyFailed(let error): return "alreadyFailed(\(error.message))"
            case .notStreaming: return "notStreaming"
            }
        }),
        ("sourceChanged", { "\($0.sourceChanged())" }),
        ("signalLost", { "\($0.signalLost(loss))" }),
        ("follow", { describe($0.followStep(resourcesHeld: false)) }),
        ("follow(held)", { describe($0.followStep(resourcesHeld: true)) }),
        ("wait", { m in
            switch m.waitDecision() {
            case .ready: return "ready"
            case .follow: return "follow"
            case .fail(let error): return "fail(\(error.message))"
            case .notStreaming(let byCaller): return byCaller ? "notStreaming(stopped)" : "notStreaming"
            }
        }),
        ("dequeued(this epoch)", { "\($0.dequeued(epoch: $0.epoch))" }),
        ("dequeued(earlier epoch)", { "\($0.dequeued(epoch: $0.epoch &- 1))" }),
    ]

    static func describe(_ decision: PinStateMachine.StartDecision) -> String {
        switch decision {
        case .proceed: return "proceed"
        case .reject(let rejection): return "reject(\(rejection))"
        }
    }

    static func describe(_ step: PinStateMachine.FollowStep) -> String {
        switch step {
        case .stopped: return "stopped"
        case .failed(let error): return "failed(\(error.message))"
        case .restart: return "restart"
        case .waitForBuffers: return "waitForBuffers"
        case .report(let loss): return "report(\(loss.detail))"
        case .waitForSignal: return "waitForSignal"
        }
    }

    static func describe(_ machine: PinStateMachine) -> String {
        switch machine.state {
        case .idle: return "idle"
        case .starting(let restart): return restart ? "starting(restart)" : "starting"
        case .stopRequested: return "stopRequested"
        case .streaming: return "streaming#\(machine.epoch)"
        case .restartPending: return "restartPending"
        case .noSignal(_, let reported): return reported ? "noSignal(reported)" : "noSignal"
        case .stopped: return "stopped"
        case .failed(let error): return "failed(\(error.message))"
        }
    }

    /// state -> event -> "action -> next state". A state or event added to the machine without
    /// a row here fails the test.
    static let table: [String: [String: String]] = [
        "idle": [
            "start": "proceed -> starting", "start(held)": "reject(framesStillHeld) -> idle",
            "restart": "reject(stoppedWhileFollowing) -> idle", "restart(held)": "reject(stoppedWhileFollowing) -> idle",
            "commit": "invalid -> idle", "started": "- -> idle", "startFailed": "- -> idle",
            "stop": "cancel -> stopped", "fail": "notStreaming -> idle",
            "sourceChanged": "false -> idle", "signalLost": "false -> idle",
            "follow": "stopped -> idle", "follow(held)": "stopped -> idle", "wait": "notStreaming -> idle",
            "dequeued(this epoch)": "discard -> idle", "dequeued(earlier epoch)": "discard -> idle",
        ],
        "starting": [
            "start": "reject(startingElsewhere) -> starting", "start(held)": "reject(startingElsewhere) -> starting",
            "restart": "reject(startingElsewhere) -> starting", "restart(held)": "reject(startingElsewhere) -> starting",
            "commit": "streamOn -> starting", "started": "- -> streaming#1", "startFailed": "- -> idle",
            "stop": "none -> stopRequested", "fail": "notStreaming -> starting",
            "sourceChanged": "false -> starting", "signalLost": "false -> starting",
            "follow": "stopped -> starting", "follow(held)": "stopped -> starting", "wait": "notStreaming -> starting",
            "dequeued(this epoch)": "discard -> starting", "dequeued(earlier epoch)": "discard -> starting",
        ],
        "starting(restart)": [
            "start": "reject(startingElsewhere) -> starting(restart)", "start(held)": "reject(startingElsewhere) -> starting(restart)",
            "restart": "reject(startingElsewhere) -> starting(restart)", "restart(held)": "reject(startingElsewhere) -> starting(restart)",
            "commit": "streamOn -> starting(restart)", "started": "- -> streaming#2", "startFailed": "- -> failed(E2)",
            "stop": "none -> stopRequested", "fail": "record(E2) -> failed(E2)",
            "sourceChanged": "false -> starting(restart)", "signalLost": "false -> starting(restart)",
            "follow": "stopped -> starting(restart)", "follow(held)": "stopped -> starting(restart)", "wait": "follow -> starting(restart)",
            "dequeued(this epoch)": "discard -> starting(restart)", "dequeued(earlier epoch)": "discard -> starting(restart)",
        ],
        "stopRequested": [
            "start": "reject(startingElsewhere) -> stopRequested", "start(held)": "reject(startingElsewhere) -> stopRequested",
            "restart": "reject(startingElsewhere) -> stopRequested", "restart(held)": "reject(startingElsewhere) -> stopRequested",
            "commit": "abandon -> stopped", "started": "- -> stopRequested", "startFailed": "- -> stopped",
            "stop": "none -> stopRequested", "fail": "notStreaming -> stopRequested",
            "sourceChanged": "false -> stopRequested", "signalLost": "false -> stopRequested",
            "follow": "stopped -> stopRequested", "follow(held)": "stopped -> stopRequested", "wait": "notStreaming(stopped) -> stopRequested",
            "dequeued(this epoch)": "discard -> stopRequested", "dequeued(earlier epoch)": "discard -> stopRequested",
        ],
        "streaming": [
            "start": "reject(alreadyStreaming) -> streaming#1", "start(held)": "reject(alreadyStreaming) -> streaming#1",
            "restart": "reject(alreadyStreaming) -> streaming#1", "restart(held)": "reject(alreadyStreaming) -> streaming#1",
            "commit": "invalid -> streaming#1", "started": "- -> streaming#1", "startFailed": "- -> streaming#1",
            "stop": "streamOffAndCancel -> stopped", "fail": "streamOffAndCancel(E2) -> failed(E2)",
            "sourceChanged": "true -> restartPending", "signalLost": "false -> streaming#1",
            "follow": "stopped -> streaming#1", "follow(held)": "stopped -> streaming#1", "wait": "ready -> streaming#1",
            "dequeued(this epoch)": "accept -> streaming#1", "dequeued(earlier epoch)": "discard -> streaming#1",
        ],
        "restartPending": [
            "start": "reject(followingSourceChange) -> restartPending", "start(held)": "reject(followingSourceChange) -> restartPending",
            "restart": "proceed -> starting(restart)", "restart(held)": "reject(framesStillHeld) -> restartPending",
            "commit": "invalid -> restartPending", "started": "- -> restartPending", "startFailed": "- -> restartPending",
            "stop": "cancel -> stopped", "fail": "record(E2) -> failed(E2)",
            "sourceChanged": "false -> restartPending", "signalLost": "true -> noSignal",
            "follow": "restart -> restartPending", "follow(held)": "waitForBuffers -> restartPending", "wait": "follow -> restartPending",
            "dequeued(this epoch)": "discard -> restartPending", "dequeued(earlier epoch)": "discard -> restartPending",
        ],
        "noSignal": [
            "start": "reject(followingSourceChange) -> noSignal", "start(held)": "reject(followingSourceChange) -> noSignal",
            "restart": "reject(waitingForSignal) -> noSignal", "restart(held)": "reject(waitingForSignal) -> noSignal",
            "commit": "invalid -> noSignal", "started": "- -> noSignal", "startFailed": "- -> noSignal",
            "stop": "cancel -> stopped", "fail": "record(E2) -> failed(E2)",
            "sourceChanged": "false -> restartPending", "signalLost": "false -> noSignal",
            "follow": "report(L) -> noSignal(reported)", "follow(held)": "report(L) -> noSignal(reported)", "wait": "follow -> noSignal",
            "dequeued(this epoch)": "discard -> noSignal", "dequeued(earlier epoch)": "discard -> noSignal",
        ],
        "noSignal(reported)": [
            "start": "reject(followingSourceChange) -> noSignal(reported)", "start(held)": "reject(followingSourceChange) -> noSignal(reported)",
            "restart": "reject(waitingForSignal) -> noSignal(reported)", "restart(held)": "reject(waitingForSignal) -> noSignal(reported)",
            "commit": "invalid -> noSignal(reported)", "started": "- -> noSignal(reported)", "startFailed": "- -> noSignal(reported)",
            "stop": "cancel -> stopped", "fail": "record(E2) -> failed(E2)",
            "sourceChanged": "false -> restartPending", "signalLost": "false -> noSignal(reported)",
            "follow": "waitForSignal -> noSignal(reported)", "follow(held)": "waitForSignal -> noSignal(reported)", "wait": "follow -> noSignal(reported)",
            "dequeued(this epoch)": "discard -> noSignal(reported)", "dequeued(earlier epoch)": "discard -> noSignal(reported)",
        ],
        "stopped": [
            "start": "proceed -> starting", "start(held)": "reject(framesStillHeld) -> stopped",
            "restart": "reject(stoppedWhileFollowing) -> stopped", "restart(held)": "reject(stoppedWhileFollowing) -> stopped",
            "commit": "invalid -> stopped", "started": "- -> stopped", "startFailed": "- -> stopped",
            "stop": "cancel -> stopped", "fail": "notStreaming -> stopped",
            "sourceChanged": "false -> stopped", "signalLost": "false -> stopped",
            "follow": "stopped -> stopped", "follow(held)": "stopped -> stopped", "wait": "notStreaming(stopped) -> stopped",
            "dequeued(this epoch)": "discard -> stopped", "dequeued(earlier epoch)": "discard -> stopped",
        ],
        "failed": [
            "start": "proceed -> starting", "start(held)": "reject(framesStillHeld) -> failed(E1)",
            "restart": "reject(stoppedWhileFollowing) -> failed(E1)", "restart(held)": "reject(stoppedWhileFollowing) -> failed(E1)",
            "commit": "invalid -> failed(E1)", "started": "- -> failed(E1)", "startFailed": "- -> failed(E1)",
            "stop": "cancel -> failed(E1)", "fail": "alreadyFailed(E1) -> failed(E1)",
            "sourceChanged": "false -> failed(E1)", "signalLost": "false -> failed(E1)",
            "follow": "failed(E1) -> failed(E1)", "follow(held)": "failed(E1) -> failed(E1)", "wait": "fail(E1) -> failed(E1)",
            "dequeued(this epoch)": "discard -> failed(E1)", "dequeued(earlier epoch)": "discard -> failed(E1)",
        ],
    ]

    func testEveryStateAndEventPairAnswersAsTheTableSays() {
        XCTAssertEqual(Set(Self.table.keys), Set(Self.states.map(\.name)), "a row per state")
        var pairs = 0
        for (stateName, make) in Self.states {
            XCTAssertEqual(Self.describe(make()).replacingOccurrences(of: "#1", with: "").replacingOccurrences(of: "(E1)", with: ""),
                           stateName.replacingOccurrences(of: "(E1)", with: ""), "the builder of \(stateName) reaches it")
            for (eventName, apply) in Self.events {
                var machine = make()
                let action = apply(&machine)
                let got = "\(action) -> \(Self.describe(machine))"
                guard let expected = Self.table[stateName]?[eventName] else {
                    XCTFail("no expectation for (\(stateName), \(eventName)); the machine answers \(got)")
                    continue
                }
                XCTAssertEqual(got, expected, "(\(stateName), \(eventName))")
                pairs += 1
            }
            XCTAssertEqual(Set(Self.table[stateName]?.keys ?? [:].keys), Set(Self.events.map(\.name)), "a column per event in \(stateName)")
        }
        XCTAssertEqual(pairs, Self.states.count * Self.events.count)
    }

    /// The race of defect 1 as events: a stop() while a restart sets up its buffers, then the
    /// restart's commit. The pin must not stream after the stop.
    func testStopDuringARestartAbandonsTheRestart() {
        var machine = Self.streaming()
        XCTAssertTrue(machine.sourceChanged())
        XCTAssertEqual(machine.start(restart: true, resourcesHeld: false), .proceed)
        XCTAssertEqual(machine.stop(), .none)
        XCTAssertEqual(machine.commitStart(), .abandon)
        XCTAssertFalse(machine.isStreaming)
        XCTAssertTrue(machine.wasStoppedByCaller)
    }

    /// The race of defect 7 as events: a buffer dequeued in one stream, a stop (and a new start)
    /// before it is looked at: it is discarded, not counted.
    func testABufferOfAStreamThatEndedIsDiscarded() {
        var machine = Self.streaming()
        let epoch = machine.epoch
        _ = machine.stop()
        XCTAssertEqual(machine.dequeued(epoch: epoch), .discard)
        _ = machine.start(restart: false, resourcesHeld: false)
        _ = machine.commitStart()
        machine.started()
        XCTAssertEqual(machine.dequeued(epoch: epoch), .discard)
        XCTAssertEqual(machine.dequeued(epoch: machine.epoch), .accept)
    }
}
