import CV4L2
import FrameBridge
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// Stream pointers: the leading edge, clones holding frames, release, the trailing window,
/// lock/unlock, cancel handlers, and a frame never being queued twice.
final class StreamPointerTests: XCTestCase {
    func testLeadingEdgeAdvancesWithIncreasingSequenceNumbers() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start()
            XCTAssertTrue(rig.pin.isStreaming)
            XCTAssertFalse(gotFrame(rig.pin.cloneLeadingEdge()), "no leading edge before the first frame")
            var sequences: [UInt32] = []
            for _ in 0..<10 {
                XCTAssertTrue(try rig.pin.advance(timeout: .milliseconds(1000)))
                let edge = try unwrapPointer(rig.pin.cloneLeadingEdge())
                sequences.append(edge.info.sequence)
                // A second clone of the same edge is the same frame.
                let again = try unwrapPointer(rig.pin.cloneLeadingEdge())
                XCTAssertEqual(again.info.sequence, edge.info.sequence)
                XCTAssertEqual(again.info.index, edge.info.index)
            }
            XCTAssertEqual(sequences, Array(0..<10), "\(layout)")
            let stats = rig.pin.statistics
            XCTAssertEqual(stats.delivered, 10)
            XCTAssertEqual(stats.firstSequence, 0)
            XCTAssertEqual(stats.lastSequence, 9)
            XCTAssertEqual(stats.dropped, 0)
            XCTAssertEqual(rig.pin.bufferCounts.held, 1, "only the leading edge holds a frame")
            XCTAssertEqual(rig.queue.dequeuedCount, 1)
            rig.assertAccounted("\(layout)")
            rig.pin.stop()
        }
    }

    /// A clone keeps its frame out of the driver's hands after the edge moves on; the frame
    /// is queued again exactly when the last reference goes.
    func testCloneHoldsTheFrameUntilTheLastReferenceGoes() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start(AllocatorSelection(frameCount: 4))
            let pointer = try unwrapPointer(try rig.pin.next())
            let index = UInt32(pointer.info.index)
            let sequence = pointer.info.sequence
            var clone = pointer.clone()
            XCTAssertEqual(clone.info.sequence, sequence)
            XCTAssertEqual(rig.pin.livePointers, 2)
            _ = consume pointer
            XCTAssertEqual(rig.pin.livePointers, 1)
            for _ in 0..<6 {
                XCTAssertTrue(try rig.pin.advance())
                XCTAssertTrue(rig.queue.dequeuedIndexes.contains(index), "\(layout): buffer \(index) went back to the driver while a clone held it")
                rig.assertAccounted("\(layout) while the clone holds buffer \(index)")
            }
            XCTAssertEqual(rig.pin.bufferCounts.held, 2, "the clone's frame and the leading edge")
            // The clone still reads its own frame, not a newer one in the same buffer.
            let payloadSizes = rig.payloadSizes
            XCTAssertNil(try clone.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            XCTAssertTrue(clone.isValid)
            let queuedBefore = rig.count(CV4L2_VIDIOC_QBUF)
            clone.release()
            XCTAssertEqual(rig.count(CV4L2_VIDIOC_QBUF), queuedBefore + 1, "releasing the last reference queues the buffer")
            let state = rig.queue
            XCTAssertFalse(state.dequeuedIndexes.contains(index))
            XCTAssertTrue(state.queuedIndexes.contains(index) || state.filledIndexes.contains(index))
            XCTAssertEqual(rig.pin.livePointers, 0)
            rig.assertAccounted("\(layout) after the release")
            rig.pin.stop()
        }
    }

    func testReleasingANonLastReferenceDoesNotRequeue() throws {
        let rig = try SimRig(.singlePlanar)
        try rig.pin.start()
        let pointer = try unwrapPointer(try rig.pin.next())
        let index = UInt32(pointer.info.index)
        let queuedBefore = rig.count(CV4L2_VIDIOC_QBUF)
        pointer.release() // the leading edge still references the frame
        XCTAssertEqual(rig.count(CV4L2_VIDIOC_QBUF), queuedBefore)
        XCTAssertTrue(rig.queue.dequeuedIndexes.contains(index))
        XCTAssertTrue(try rig.pin.advance())
        XCTAssertEqual(rig.count(CV4L2_VIDIOC_QBUF), queuedBefore + 1, "the edge moving on releases the frame")
        XCTAssertFalse(rig.queue.dequeuedIndexes.contains(index))
        rig.pin.stop()
    }

    /// Each dequeued frame goes back exactly once: QBUF count equals the frames returned,
    /// and the simulator (which refuses a second QBUF of a queued buffer) never complains.
    func testAFrameIsNeverQueuedTwice() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start(AllocatorSelection(frameCount: 5))
            XCTAssertEqual(rig.count(CV4L2_VIDIOC_QBUF), 5, "one QBUF per frame at start")
            rig.backend.resetCounters(path: capturePath)
            var clones: [HeldFrame] = []
            var released = 0
            for step in 0..<40 {
                let frame = HeldFrame(try unwrapPointer(try rig.pin.next()))
                // Several references to some frames, released in a different order.
                if step % 3 == 0 { clones.append(frame.clone()) }
                if step % 5 == 0 { clones.append(frame.clone()) }
                frame.release()
                if clones.count > 2 {
                    clones.removeFirst().release()
                }
                released = rig.count(CV4L2_VIDIOC_QBUF)
                XCTAssertEqual(rig.pin.statistics.requeueFailures, 0, "\(layout) step \(step): a QBUF failed")
                rig.assertAccounted("\(layout) step \(step)")
            }
            clones.removeAll()
            let edgeHeld = 1
            XCTAssertEqual(rig.count(CV4L2_VIDIOC_QBUF), 40 - edgeHeld,
                           "\(layout): 40 frames dequeued, all but the leading edge's returned once (last count \(released))")
            XCTAssertEqual(rig.count(CV4L2_VIDIOC_DQBUF), 40)
            XCTAssertEqual(rig.pin.livePointers, 0)
            rig.pin.stop()
        }
    }

    /// next(keepLeadingEdge: false) hands the edge's reference to the pointer: the frame is
    /// queued again the moment the pointer goes.
    func testNextWithoutKeepingTheLeadingEdgeRequeuesOnRelease() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start(AllocatorSelection(frameCount: 4))
            XCTAssertTrue(try rig.pin.advance())
            let pointer = try unwrapPointer(try rig.pin.next(keepLeadingEdge: false))
            XCTAssertFalse(gotFrame(rig.pin.cloneLeadingEdge()), "\(layout): no leading edge")
            XCTAssertEqual(rig.pin.bufferCounts.held, 1, "the previous edge's frame went back")
            let index = UInt32(pointer.info.index)
            let queuedBefore = rig.count(CV4L2_VIDIOC_QBUF)
            pointer.release()
            XCTAssertEqual(rig.count(CV4L2_VIDIOC_QBUF), queuedBefore + 1, "\(layout): queued again at once")
            XCTAssertFalse(rig.queue.dequeuedIndexes.contains(index))
            XCTAssertEqual(rig.pin.bufferCounts.held, 0)
            XCTAssertEqual(rig.pin.livePointers, 0)
            rig.assertAccounted("\(layout)")
            var sequences: [UInt32] = []
            for _ in 0..<6 { sequences.append(try unwrapPointer(try rig.pin.next(keepLeadingEdge: false)).info.sequence) }
            XCTAssertEqual(sequences, Array(2..<8))
            XCTAssertEqual(rig.queue.dequeuedCount, 0, "every frame is back with the driver")
            rig.pin.stop()
            rig.assertTornDown("\(layout)")
        }
    }

    func testTrailingWindowHoldsNFramesBehindTheLeadingEdge() throws {
        for layout in Layout.allCases {
            for window in [1, 3] {
                let rig = try SimRig(layout, trailingWindow: window)
                try rig.pin.start(AllocatorSelection(frameCount: 6))
                var indexes: [Int] = []
                for step in 0..<12 {
                    XCTAssertTrue(try rig.pin.advance())
                    indexes.append(try unwrapPointer(rig.pin.cloneLeadingEdge()).info.index)
                    let expectedHeld = min(step + 1, window + 1)
                    XCTAssertEqual(rig.pin.bufferCounts.held, expectedHeld, "\(layout) window \(window) step \(step)")
                    XCTAssertEqual(rig.queue.dequeuedCount, expectedHeld)
                    XCTAssertEqual(Set(rig.queue.dequeuedIndexes.map(Int.init)), Set(indexes.suffix(window + 1)),
                                   "the last \(window + 1) frames are the ones held")
                }
                XCTAssertEqual(rig.pin.bufferCounts.queued, 6 - window - 1)
                XCTAssertEqual(rig.pin.livePointers, 0, "the window holds frames without stream pointers")
                rig.pin.stop()
                rig.assertTornDown("\(layout) window \(window)")
            }
        }
    }

    /// With a window of 2 and 4 buffers, holding one more frame starves the driver: the window
    /// gives way before the starvation policy applies.
    func testTrailingWindowGivesWayWhenTheDriverWouldStarve() throws {
        let rig = try SimRig(.singlePlanar, trailingWindow: 2)
        try rig.pin.start(AllocatorSelection(frameCount: 4))
        XCTAssertTrue(try rig.pin.advance())
        let held = try unwrapPointer(rig.pin.cloneLeadingEdge())
        // Three more frames: the window holds the two before the edge, the pointer the first.
        for _ in 0..<3 { XCTAssertTrue(try rig.pin.advance()) }
        XCTAssertEqual(rig.pin.bufferCounts.queued, 0)
        XCTAssertEqual(rig.queue.dequeuedCount, 4)
        XCTAssertTrue(try rig.pin.advance(timeout: .milliseconds(1000)), "the window released its oldest frame to feed the driver")
        XCTAssertEqual(rig.pin.statistics.starvationWaits, 0)
        XCTAssertTrue(held.isValid, "a frame held by a pointer is not touched by the window")
        rig.pin.stop()
    }

    func testPayloadIsReachableOnlyWhileLocked() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start()
            var pointer = try unwrapPointer(try rig.pin.next())
            XCTAssertFalse(pointer.isLocked)
            try pointer.lock()
            XCTAssertTrue(pointer.isLocked)
            try pointer.lock() // locking twice is harmless
            let payloadSizes = rig.payloadSizes
            XCTAssertNil(pointer.withPayload { payloadProblem($0, payloadSizes: payloadSizes) }, "\(layout)")
            let planes = pointer.withPayload { $0.planeCount }
            XCTAssertEqual(planes, layout.planeCount)
            pointer.unlock()
            XCTAssertFalse(pointer.isLocked)
            // withLockedPayload locks and unlocks around the body; on a locked pointer it stays locked.
            XCTAssertEqual(try pointer.withLockedPayload { $0.info.sequence }, pointer.info.sequence)
            XCTAssertFalse(pointer.isLocked)
            try pointer.lock()
            _ = try pointer.withLockedPayload { $0.planeCount }
            XCTAssertTrue(pointer.isLocked)
            pointer.unlock()
            rig.pin.stop()
        }
    }

    func testCancelHandlersRunOnStopForUnlockedPointersAndOnUnlockForLockedOnes() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start(AllocatorSelection(frameCount: 5))
            let unlocked = HeldFrame(try unwrapPointer(try rig.pin.next()))
            let locked = HeldFrame(try unwrapPointer(try rig.pin.next()))
            let lockedLater = HeldFrame(try unwrapPointer(try rig.pin.next()))
            let noHandler = HeldFrame(try unwrapPointer(try rig.pin.next()))
            unlocked.registerCancelHandler()
            try locked.lock()
            locked.registerCancelHandler() // registered while locked
            lockedLater.registerCancelHandler()
            try lockedLater.lock() // locked after registering
            XCTAssertEqual(unlocked.cancelRuns.value + locked.cancelRuns.value + lockedLater.cancelRuns.value, 0)

            rig.pin.stop()
            XCTAssertFalse(rig.pin.isStreaming)
            XCTAssertEqual(unlocked.cancelRuns.value, 1, "\(layout): an unlocked pointer's handler runs on stop")
            XCTAssertEqual(locked.cancelRuns.value, 0, "\(layout): a locked pointer's handler waits for the unlock")
            XCTAssertEqual(lockedLater.cancelRuns.value, 0)
            XCTAssertEqual(rig.pin.statistics.cancelledFrames, 4, "every held frame was cancelled")
            for frame in [unlocked, locked, lockedLater, noHandler] { XCTAssertFalse(frame.isValid) }
            // Data of a frame locked before the stop stays readable until the unlock.
            let payloadSizes = rig.payloadSizes
            XCTAssertNil(try locked.withPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            XCTAssertEqual(rig.backend.liveMappingCount, 5 * layout.planeCount, "memory stays mapped while pointers are alive")
            XCTAssertNotNil(rig.pin.allocator)
            locked.unlock()
            XCTAssertEqual(locked.cancelRuns.value, 1, "\(layout): the locked pointer's handler ran on unlock")
            lockedLater.unlock()
            XCTAssertEqual(lockedLater.cancelRuns.value, 1)
            locked.unlock() // unlocking again runs nothing twice
            XCTAssertEqual(locked.cancelRuns.value, 1)
            XCTAssertEqual(unlocked.cancelRuns.value, 1, "handlers run once")
            // A handler registered on a cancelled, unlocked pointer runs at once.
            let late = Counter()
            noHandler.pointer!.onCancel { late.increment() }
            XCTAssertEqual(late.value, 1)
            for frame in [unlocked, locked, lockedLater] { frame.release() }
            XCTAssertNotNil(rig.pin.allocator, "one pointer is still alive")
            noHandler.release()
            rig.assertTornDown("\(layout): the allocator frees once the last pointer goes")
        }
    }

    func testLockAfterStopFailsWithFrameCancelledAndClonesAreCancelledToo() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start()
            var pointer = try unwrapPointer(try rig.pin.next())
            XCTAssertTrue(pointer.isValid)
            rig.pin.stop()
            XCTAssertFalse(pointer.isValid)
            XCTAssertThrowsError(try pointer.lock()) { error in
                XCTAssertEqual((error as? CaptureError)?.kind, .frameCancelled)
                XCTAssertTrue("\(error)".contains("STREAMOFF"), "\(error)")
                XCTAssertTrue("\(error)".contains(capturePath), "\(error)")
            }
            XCTAssertFalse(pointer.isLocked)
            XCTAssertThrowsError(try pointer.withLockedPayload { _ in () }) { error in
                XCTAssertEqual((error as? CaptureError)?.kind, .frameCancelled)
            }
            var clone = pointer.clone()
            XCTAssertFalse(clone.isValid, "a clone of a cancelled frame is cancelled")
            XCTAssertThrowsError(try clone.lock())
            XCTAssertEqual(rig.pin.livePointers, 2)
            _ = consume clone
            _ = consume pointer
            rig.assertTornDown("\(layout)")
        }
    }

    func testRestartAfterStop() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            for kind in AllocatorKind.allCases {
                try rig.pin.start(rig.selection(kind))
                for _ in 0..<3 { XCTAssertTrue(try rig.pin.advance()) }
                XCTAssertEqual(rig.pin.statistics.delivered, 3)
                rig.pin.stop()
                rig.pin.stop() // stop twice is harmless
                XCTAssertEqual(rig.pin.statistics.delivered, 3, "statistics stay readable after stop")
                XCTAssertThrowsError(try rig.pin.advance(timeout: .milliseconds(10))) { error in
                    XCTAssertEqual((error as? CaptureError)?.kind, .invalidState)
                }
                try rig.pin.start(rig.selection(kind))
                XCTAssertEqual(rig.pin.statistics.delivered, 0, "a new stream has new statistics")
                var pointer = try unwrapPointer(try rig.pin.next())
                XCTAssertEqual(pointer.info.sequence, 0, "\(layout) \(kind): the driver restarts its sequence numbers")
                let payloadSizes = rig.payloadSizes
                XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
                _ = consume pointer
                rig.pin.stop()
                rig.assertTornDown("\(layout) \(kind)")
            }
        }
    }

    func testStartIsRefusedWhileStreamingOrWhilePointersOfTheLastStreamLive() throws {
        let rig = try SimRig(.singlePlanar)
        try rig.pin.start()
        let streaming = expectCaptureError { () throws(CaptureError) in try rig.pin.start() }
        XCTAssertEqual(streaming?.kind, .invalidState)
        XCTAssertTrue(streaming?.message.contains("already streaming") ?? false)
        let pointer = try unwrapPointer(try rig.pin.next())
        rig.pin.stop()
        let live = expectCaptureError { () throws(CaptureError) in try rig.pin.start() }
        XCTAssertEqual(live?.kind, .invalidState)
        XCTAssertTrue(live?.message.contains("1 stream pointer(s)") ?? false, "\(String(describing: live))")
        _ = consume pointer
        try rig.pin.start()
        XCTAssertTrue(rig.pin.isStreaming)
        rig.pin.stop()
    }
}
