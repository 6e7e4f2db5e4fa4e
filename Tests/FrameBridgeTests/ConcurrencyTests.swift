import Dispatch
import FrameBridge
import Foundation
import Synchronization
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// Frames released from other threads and tasks while one thread streams; the
/// `CapturedFrames` AsyncSequence; stop from another thread. Race-free under ThreadSanitizer.
final class ConcurrencyTests: XCTestCase {
    /// One thread streams 500 frames; a TaskGroup checks and releases them concurrently.
    func testFramesReleasedFromATaskGroupWhileOneThreadStreams() async throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, width: 160, height: 120)
            try rig.pin.start(AllocatorSelection(frameCount: 8))
            let problems = ProblemLog()
            let payloadSizes = rig.payloadSizes
            let total = 500
            let (frames, continuation) = AsyncStream.makeStream(of: CapturedFrame.self)
            let streamer = Thread {
                var last: UInt32?
                for i in 0..<total {
                    do {
                        guard let pointer = try rig.pin.next(timeout: .milliseconds(5000)) else {
                            problems.add("frame \(i): timed out with \(rig.pin.bufferCounts) buffers")
                            break
                        }
                        if let last, pointer.info.sequence != last + 1 {
                            problems.add("sequence \(pointer.info.sequence) after \(last)")
                        }
                        last = pointer.info.sequence
                        continuation.yield(CapturedFrame.holding(pointer))
                    } catch {
                        problems.add("frame \(i): \(error)")
                        break
                    }
                }
                continuation.finish()
            }
            streamer.start()
            let released = Counter()
            await withTaskGroup(of: Void.self) { group in
                var i = 0
                for await frame in frames {
                    let check = i % 4 == 0
                    i += 1
                    group.addTask {
                        if check {
                            do {
                                if let problem = try frame.withLockedPayload({ payloadProblem($0, payloadSizes: payloadSizes) }) {
                                    problems.add(problem)
                                }
                            } catch {
                                problems.add("lock in a task: \(error)")
                            }
                        }
                        await Task.yield()
                        frame.release()
                        released.increment()
                    }
                }
            }
            XCTAssertEqual(problems.all, [], "\(layout)")
            XCTAssertEqual(released.value, total, "\(layout)")
            XCTAssertEqual(rig.pin.livePointers, 0, "\(layout)")
            let stats = rig.pin.statistics
            XCTAssertEqual(stats.delivered, total)
            XCTAssertEqual(stats.driverViolations, 0)
            XCTAssertEqual(stats.requeueFailures, 0)
            let counts = rig.pin.bufferCounts
            XCTAssertEqual(counts.queued + counts.held, 8, "\(layout): no buffer lost")
            XCTAssertEqual(counts.held, 1, "only the leading edge holds a frame")
            rig.assertAccounted("\(layout)")
            rig.pin.stop()
            rig.assertTornDown("\(layout)")
            print("concurrency: \(layout): \(total) frames released from tasks, \(stats.starvationWaits) starvation waits")
        }
    }

    /// Clones, locks, unlocks and releases from several threads at once while one thread streams.
    func testPointersUsedFromManyThreads() throws {
        let rig = try SimRig(.multiPlanar, width: 160, height: 120)
        try rig.pin.start(AllocatorSelection(frameCount: 6))
        let problems = ProblemLog()
        let payloadSizes = rig.payloadSizes
        let inbox = Locked<[CapturedFrame]>([])
        let done = Atomic<Bool>(false)
        let handled = Counter()
        let group = DispatchGroup()
        for _ in 0..<3 {
            DispatchQueue.global().async(group: group) {
                while true {
                    let frame = inbox.withLock { $0.isEmpty ? nil : $0.removeFirst() }
                    guard let frame else {
                        if done.load(ordering: .acquiring) && inbox.withLock({ $0.isEmpty }) { return }
                        sched_yield()
                        continue
                    }
                    do {
                        if let problem = try frame.withLockedPayload({ payloadProblem($0, payloadSizes: payloadSizes) }) {
                            problems.add(problem)
                        }
                    } catch {
                        problems.add("\(error)")
                    }
                    frame.release()
                    handled.increment()
                }
            }
        }
        var streamed = 0
        for _ in 0..<300 {
            guard let pointer = try rig.pin.next(timeout: .milliseconds(5000)) else {
                XCTFail("timed out with \(rig.pin.bufferCounts)")
                break
            }
            let clone = CapturedFrame.holding(pointer.clone())
            let original = CapturedFrame.holding(pointer)
            inbox.withLock { $0.append(original) }
            inbox.withLock { $0.append(clone) }
            streamed += 1
        }
        done.store(true, ordering: .releasing)
        group.wait()
        XCTAssertEqual(problems.all, [])
        XCTAssertEqual(handled.value, 2 * streamed)
        XCTAssertEqual(rig.pin.livePointers, 0)
        XCTAssertEqual(rig.pin.bufferCounts.queued + rig.pin.bufferCounts.held, 6)
        rig.assertAccounted("after the threads finished")
        rig.pin.stop()
        rig.assertTornDown("many threads")
    }

    func testCapturedFramesWithALimit() async throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start()
            var sequences: [UInt32] = []
            let payloadSizes = rig.payloadSizes
            for try await frame in rig.pin.frames(limit: 5) {
                sequences.append(frame.info.sequence)
                XCTAssertNil(try frame.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
                frame.release()
                XCTAssertThrowsError(try frame.withLockedPayload { _ in () }) { error in
                    XCTAssertEqual((error as? CaptureError)?.kind, .frameCancelled, "a released frame")
                }
            }
            XCTAssertEqual(sequences, [0, 1, 2, 3, 4], "\(layout)")
            XCTAssertTrue(rig.pin.isStreaming, "a limit ends the sequence, not the stream")
            XCTAssertEqual(rig.pin.livePointers, 0)
            // A second sequence continues where the first stopped.
            var more: [UInt32] = []
            for try await frame in rig.pin.frames(limit: 2) { more.append(frame.info.sequence) }
            XCTAssertEqual(more, [5, 6])
            rig.pin.stop()
            rig.assertTornDown("\(layout)")
        }
    }

    func testCancellingTheConsumingTaskStopsTheStream() async throws {
        let rig = try SimRig(.singlePlanar)
        try rig.pin.start()
        let seen = Counter()
        let pin = rig.pin
        let task = Task {
            var count = 0
            for try await frame in pin.frames() {
                count += 1
                _ = frame.info.sequence
                seen.increment()
            }
            return count
        }
        while seen.value < 20 { await Task.yield() }
        task.cancel()
        let count = try await task.value
        XCTAssertGreaterThanOrEqual(count, 20)
        XCTAssertFalse(rig.pin.isStreaming, "cancelling the consuming task stops streaming")
        XCTAssertNil(rig.pin.failure, "cancellation is not a failure")
        XCTAssertEqual(rig.pin.livePointers, 0)
        rig.assertTornDown("after cancellation")
        XCTAssertFalse(rig.queue.isStreaming)
    }

    func testAFatalErrorEndsTheAsyncSequenceByThrowing() async throws {
        let rig = try SimRig(.multiPlanar)
        try rig.pin.start()
        var count = 0
        do {
            for try await _ in rig.pin.frames() {
                count += 1
                if count == 3 { rig.inject(.fatalError) }
                if count > 10 { break }
            }
            XCTFail("the sequence ended without an error after \(count) frames")
        } catch let error as CaptureError {
            XCTAssertEqual(error.kind, .fatalStreamingError)
        }
        XCTAssertEqual(count, 3)
        XCTAssertFalse(rig.pin.isStreaming)
    }

    /// stop() from another thread wakes a thread waiting in advance() for a frame that never comes.
    func testStopFromAnotherThreadEndsAWaitingAdvance() throws {
        let rig = try SimRig(.singlePlanar, production: .manual)
        try rig.pin.start()
        XCTAssertEqual(rig.backend.produceFrames(path: capturePath, count: 1), 1)
        XCTAssertTrue(try rig.pin.advance(timeout: .milliseconds(1000)))
        let outcome = Locked<String?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let waiting = Atomic<Bool>(false)
        let pin = rig.pin
        let start = ContinuousClock.now
        Thread {
            waiting.store(true, ordering: .releasing)
            do {
                let advanced = try pin.advance(timeout: .milliseconds(10_000))
                outcome.withLock { $0 = "returned \(advanced)" }
            } catch let error as CaptureError {
                outcome.withLock { $0 = "\(error.kind)" }
            } catch {
                outcome.withLock { $0 = "\(error)" }
            }
            finished.signal()
        }.start()
        while !waiting.load(ordering: .acquiring) { sched_yield() }
        usleep(20_000) // let it reach the wait
        rig.pin.stop()
        XCTAssertEqual(finished.wait(timeout: .now() + 5), .success, "advance did not return after stop")
        XCTAssertLessThan(milliseconds(since: start), 5000)
        XCTAssertEqual(outcome.withLock { $0 }, "returned false", "a wait woken by stop() returns false; a stop is not a driver failure")
        XCTAssertNil(rig.pin.failure)
        rig.assertTornDown("after stop")
    }

    /// Two start() calls at once: one streams, the other is told why it may not; never two
    /// set-ups on one queue (the check and the commit were separate critical sections).
    func testConcurrentStartsLetExactlyOneThrough() throws {
        for round in 0..<20 {
            let rig = try SimRig(round % 2 == 0 ? .singlePlanar : .multiPlanar)
            let outcomes = Locked<[String]>([])
            let group = DispatchGroup()
            for _ in 0..<2 {
                group.enter()
                let pin = rig.pin
                Thread {
                    do {
                        try pin.start()
                        outcomes.withLock { $0.append("started") }
                    } catch {
                        outcomes.withLock { $0.append("\(error)") }
                    }
                    group.leave()
                }.start()
            }
            XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
            let all = outcomes.withLock { $0 }
            XCTAssertEqual(all.filter { $0 == "started" }.count, 1, "round \(round): \(all)")
            XCTAssertTrue(all.contains { $0.contains("being started by another caller") || $0.contains("already streaming") }, "\(all)")
            XCTAssertTrue(rig.pin.isStreaming)
            rig.assertAccounted("round \(round)")
            rig.pin.stop()
            rig.assertTornDown("round \(round)")
        }
    }
}
