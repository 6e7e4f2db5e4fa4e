import Dispatch
import Foundation
import Subprocess
import Synchronization
import SystemPackage
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A child process for the tests, run by swift-subprocess, with the synchronous calls the tests
/// need: read standard output line by line while it runs, signal it, wait for its end.
///
/// Foundation's `Process` is not used: inside the VM, CoreFoundation cannot create the socket
/// pair its run loop needs ("Could not create wakeup socket pair for CFSocket") and
/// `Process.waitUntilExit` hangs. swift-subprocess (posix_spawn, its own I/O) runs there.
///
/// Call it from a test's own thread, not from a task of the cooperative pool: the calls block
/// while the child's I/O runs in a task.
public final class ChildProcess: Sendable {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: Data
        public var stderr: String
        public var text: String { String(decoding: stdout, as: UTF8.self) }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    private struct State {
        var pid: pid_t?
        var stdout: [UInt8] = []
        var stdoutEnded = false
        var stderr: [UInt8] = []
        var status: Int32?
        var failure: String?
    }

    private let state = Locked(State())
    /// Signalled on every change of `state`, so waiters look again.
    private let changed = DispatchSemaphore(value: 0)
    private let waiters = Atomic<Int>(0)

    /// Starts `executable` with `arguments`; stdin is /dev/null, stdout and stderr are read
    /// as the child writes them.
    public init(_ executable: String, _ arguments: [String]) throws {
        let state = self.state
        let notify = { [self] in notifyWaiters() }
        Task.detached {
            do {
                let outcome = try await Subprocess.run(.path(FilePath(executable)), arguments: Arguments(arguments),
                                            input: .none, output: .sequence, error: .sequence) { execution in
                    state.withLock { $0.pid = execution.processIdentifier.value }
                    notify()
                    async let errors: Void = {
                        for try await chunk in execution.standardError {
                            let bytes = chunk.withUnsafeBytes { Array($0) }
                            state.withLock { $0.stderr += bytes }
                        }
                    }()
                    for try await chunk in execution.standardOutput {
                        let bytes = chunk.withUnsafeBytes { Array($0) }
                        state.withLock { $0.stdout += bytes }
                        notify()
                    }
                    state.withLock { $0.stdoutEnded = true }
                    notify()
                    try await errors
                }
                let status: Int32
                switch outcome.terminationStatus {
                case .exited(let code): status = Int32(code)
                case .signaled(let signal): status = 128 + Int32(signal)
                }
                state.withLock { $0.status = status }
            } catch {
                state.withLock { $0.failure = "\(executable): \(error)"; $0.stdoutEnded = true; $0.status = -1 }
            }
            notify()
        }
        // Wait until it runs (or failed to start), so that `pid` and `send` work at once.
        let started = waitFor(timeoutSeconds: 60) { $0.pid != nil || $0.failure != nil }
        if let failure = state.withLock({ $0.failure }) { throw Failure(description: failure) }
        guard started else { throw Failure(description: "\(executable) did not start within 60 s") }
    }

    /// The child's process id.
    public var pid: pid_t { state.withLock { $0.pid ?? -1 } }

    /// Reads standard output up to the first newline, for at most `timeoutSeconds`; nil when the
    /// child closed it or the time ran out first. What follows the line stays unread.
    public func readLine(timeoutSeconds: Double) -> String? {
        var line: String?
        _ = waitFor(timeoutSeconds: timeoutSeconds) { state in
            if let newline = state.stdout.firstIndex(of: 0x0A) {
                line = String(decoding: state.stdout[..<newline], as: UTF8.self)
                state.stdout.removeSubrange(...newline)
                return true
            }
            return state.stdoutEnded
        }
        return line
    }

    /// Sends `signal` to the child.
    public func send(_ signal: Int32) {
        let pid = self.pid
        if pid > 0 { kill(pid, signal) }
    }

    /// Waits for the child's end, with both outputs read to their end. Returns its exit status
    /// (128 + the signal number if a signal ended it).
    public func wait() -> Result {
        _ = waitFor(timeoutSeconds: .infinity) { $0.status != nil }
        return state.withLock { state in
            Result(status: state.status ?? -1, stdout: Data(state.stdout),
                   stderr: String(decoding: state.stderr, as: UTF8.self) + (state.failure.map { "\n" + $0 } ?? ""))
        }
    }

    /// Runs a program to its end.
    public static func run(_ executable: String, _ arguments: [String]) throws -> Result {
        try ChildProcess(executable, arguments).wait()
    }

    /// Blocks until `condition` holds (checked under the lock, after every change) or the time
    /// is up; returns whether it held.
    private func waitFor(timeoutSeconds: Double, _ condition: (inout State) -> Bool) -> Bool {
        let deadline = DispatchTime.now() + (timeoutSeconds.isFinite ? timeoutSeconds : 1e9)
        waiters.add(1, ordering: .sequentiallyConsistent)
        defer { waiters.subtract(1, ordering: .sequentiallyConsistent) }
        while true {
            if state.withLock(condition) { return true }
            if changed.wait(timeout: deadline) == .timedOut { return state.withLock(condition) }
        }
    }

    private func notifyWaiters() {
        for _ in 0..<max(1, waiters.load(ordering: .sequentiallyConsistent)) { changed.signal() }
    }
}

extension ChildProcess.Result {
    /// Standard output as a JSON object (framedump's `--json` output); a test failure showing
    /// both outputs when it is not one.
    public func jsonObject(file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: stdout) as? [String: Any],
                      "not a JSON object: \(text)\nstderr: \(stderr)", file: file, line: line)
    }
}
