import CV4L2
import FrameBridge
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// A consumer holding every buffer: `.block` waits (and times out), `.cancelOldestUnlocked`
/// gives the oldest unlocked frame back to the driver; a locked frame is never cancelled.
final class StarvationTests: XCTestCase {
    /// Starts `rig`'s pin with `count` buffers and holds every one (each with a cancel handler),
    /// so the driver has none left to fill.
    private func holdEveryBuffer(_ rig: SimRig, count: Int) throws -> [HeldFrame] {
        try rig.pin.start(AllocatorSelection(frameCount: count))
        var held: [HeldFrame] = []
        for _ in 0..<count {
            let frame = HeldFrame(try unwrapPointer(try rig.pin.next()))
            frame.registerCancelHandler()
            held.append(frame)
        }
        return held
    }

    func testBlockTimesOutAndCountsTheWait() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, starvationPolicy: .block)
            var held = try holdEveryBuffer(rig, count: 4)
            XCTAssertEqual(rig.pin.bufferCounts.queued, 0)
            XCTAssertEqual(rig.queue.dequeuedCount, 4, "the consumer holds every buffer")
            let start = ContinuousClock.now
            XCTAssertFalse(try rig.pin.advance(timeout: .milliseconds(100)), "\(layout): nothing can arrive")
            let waited = milliseconds(since: start)
            XCTAssertGreaterThanOrEqual(waited, 90, "advance returned before its timeout")
            XCTAssertLessThan(waited, 2000)
            XCTAssertEqual(rig.pin.statistics.starvationWaits, 1)
            XCTAssertEqual(rig.pin.statistics.starvationCancels, 0)
            XCTAssertFalse(gotFrame(try rig.pin.next(timeout: .milliseconds(20))))
            XCTAssertEqual(rig.pin.statistics.starvationWaits, 2, "each starved wait is counted once")
            for frame in held {
                XCTAssertTrue(frame.isValid, "block never cancels")
                XCTAssertEqual(frame.cancelRuns.value, 0)
            }
            XCTAssertTrue(rig.pin.isStreaming)
            // Releasing one frame feeds the driver again.
            let released = held.removeFirst()
            let releasedIndex = released.index
            released.release()
            let next = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)), "\(layout): a released frame did not feed the driver")
            XCTAssertEqual(next.info.index, releasedIndex)
            XCTAssertEqual(next.info.sequence, 4)
            XCTAssertEqual(rig.pin.statistics.starvationWaits, 2)
            rig.assertAccounted("\(layout)")
            _ = consume next
            held.removeAll()
            rig.pin.stop()
        }
    }

    /// Before the policy applies, the frame under the leading edge gives way when only the
    /// edge holds it (otherwise the pin could never dequeue again).
    func testTheFrameUnderTheLeadingEdgeAloneGivesWayFirst() throws {
        for policy in StarvationPolicy.allCases {
            let rig = try SimRig(.multiPlanar, starvationPolicy: policy)
            try rig.pin.start(AllocatorSelection(frameCount: 3))
            var held: [HeldFrame] = []
            for _ in 0..<2 {
                let frame = HeldFrame(try unwrapPointer(try rig.pin.next()))
                frame.registerCancelHandler()
                held.append(frame)
            }
            XCTAssertTrue(try rig.pin.advance()) // the third buffer, held by the edge alone
            let edgeIndex = try unwrapPointer(rig.pin.cloneLeadingEdge()).info.index
            XCTAssertEqual(rig.pin.bufferCounts.queued, 0)
            XCTAssertTrue(try rig.pin.advance(timeout: .milliseconds(1000)), "\(policy): the edge's frame fed the driver")
            XCTAssertEqual(try unwrapPointer(rig.pin.cloneLeadingEdge()).info.index, edgeIndex)
            let stats = rig.pin.statistics
            XCTAssertEqual(stats.starvationWaits, 0, "\(policy)")
            XCTAssertEqual(stats.starvationCancels, 0, "\(policy)")
            for frame in held {
                XCTAssertTrue(frame.isValid, "\(policy): a frame held by a pointer was taken")
                XCTAssertEqual(frame.cancelRuns.value, 0)
            }
            held.removeAll()
            rig.pin.stop()
        }
    }

    func testCancelOldestUnlockedCancelsTheOldestAndKeepsStreaming() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, starvationPolicy: .cancelOldestUnlocked)
            var held = try holdEveryBuffer(rig, count: 4)
            XCTAssertEqual(rig.pin.bufferCounts.queued, 0)
            let oldest = held[0]
            let start = ContinuousClock.now
            let next = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)), "\(layout): cancel-oldest did not feed the driver")
            XCTAssertLessThan(milliseconds(since: start), 500, "no waiting with cancel-oldest")
            XCTAssertEqual(next.info.index, oldest.index, "the oldest frame's buffer was refilled")
            XCTAssertEqual(next.info.sequence, 4)
            XCTAssertEqual(oldest.cancelRuns.value, 1, "\(layout): the cancelled frame's handler ran")
            XCTAssertFalse(oldest.isValid)
            // The cancelled pointer still describes its own frame, not the one now in its buffer.
            XCTAssertEqual(oldest.pointer?.info.sequence, 0, "\(layout): a cancelled pointer's metadata changed")
            XCTAssertEqual(oldest.pointer?.info.index, next.info.index)
            let cancelledClone = oldest.clone()
            XCTAssertEqual(cancelledClone.pointer?.info.sequence, 0)
            XCTAssertFalse(cancelledClone.isValid)
            cancelledClone.release()
            XCTAssertThrowsError(try oldest.lock()) { error in
                XCTAssertEqual((error as? CaptureError)?.kind, .frameCancelled)
                XCTAssertTrue("\(error)".contains("cancel-oldest"), "\(error)")
            }
            for frame in held.dropFirst() {
                XCTAssertTrue(frame.isValid, "only the oldest is cancelled")
                XCTAssertEqual(frame.cancelRuns.value, 0)
            }
            let stats = rig.pin.statistics
            XCTAssertEqual(stats.starvationCancels, 1)
            XCTAssertEqual(stats.starvationWaits, 0)
            XCTAssertEqual(stats.cancelledFrames, 1)
            rig.assertAccounted("\(layout)")
            _ = consume next
            held.removeAll()
            oldest.release()
            rig.assertAccounted("\(layout) after releasing")
            rig.pin.stop()
            rig.assertTornDown("\(layout)")
        }
    }

    /// A locked frame is never cancelled: the oldest *unlocked* one goes; when every held
    /// frame is locked, the pin waits instead.
    func testALockedFrameIsNeverCancelled() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, starvationPolicy: .cancelOldestUnlocked)
            var held = try holdEveryBuffer(rig, count: 4)
            try held[0].lock()
            try held[2].lock()
            let payloadSizes = rig.payloadSizes
            // Starved: the oldest unlocked frame (held[1]) goes, not the locked oldest (held[0]).
            var pointer = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)))
            XCTAssertEqual(pointer.info.index, held[1].index, "\(layout)")
            XCTAssertEqual(held[1].cancelRuns.value, 1)
            XCTAssertFalse(held[1].isValid)
            XCTAssertEqual(held[0].cancelRuns.value, 0, "\(layout): a locked frame was cancelled")
            XCTAssertTrue(held[0].isValid)
            XCTAssertNil(try held[0].withPayload { payloadProblem($0, payloadSizes: payloadSizes) }, "the locked frame's data is intact")
            // Hold the new frame too and lock it: next, held[3] is the only unlocked one.
            try pointer.lock()
            let third = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)))
            XCTAssertEqual(third.info.index, held[3].index)
            XCTAssertEqual(held[3].cancelRuns.value, 1)
            // Now every held frame is locked except `third` (held by a pointer and the edge).
            var thirdLocked = third
            try thirdLocked.lock()
            XCTAssertFalse(try rig.pin.advance(timeout: .milliseconds(60)), "every frame is locked: the pin waits")
            XCTAssertEqual(rig.pin.statistics.starvationWaits, 1)
            XCTAssertEqual(rig.pin.statistics.starvationCancels, 2)
            for index in [0, 2] {
                XCTAssertTrue(held[index].isValid, "\(layout): locked frame \(index) was cancelled")
                XCTAssertEqual(held[index].cancelRuns.value, 0)
                XCTAssertNil(try held[index].withPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            }
            XCTAssertTrue(pointer.isValid)
            XCTAssertNil(pointer.withPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            XCTAssertTrue(thirdLocked.isValid)
            // Unlocking one makes it the victim of the next starvation.
            pointer.unlock()
            let victim = pointer.info.index
            let fourth = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)))
            XCTAssertEqual(fourth.info.index, victim)
            XCTAssertFalse(pointer.isValid)
            XCTAssertTrue(held[0].isValid && held[2].isValid && thirdLocked.isValid)
            rig.assertAccounted("\(layout)")
            _ = consume fourth
            _ = consume pointer
            _ = consume thirdLocked
            held.removeAll()
            rig.pin.stop()
            rig.assertTornDown("\(layout)")
        }
    }
}
