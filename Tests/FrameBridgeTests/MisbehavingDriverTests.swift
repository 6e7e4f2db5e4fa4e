import SystemPackage
import CV4L2
import FrameBridge
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// A driver that misbehaves (the simulator's fault injection): impossible answers are counted
/// and never delivered, the pin keeps streaming and loses no buffer; error frames, drops,
/// EINTR and EAGAIN storms are survived; fatal errors and disconnects are clear errors;
/// failing ioctls at start leave nothing allocated.
final class MisbehavingDriverTests: XCTestCase {
    private func report(_ name: String, _ statistics: CaptureStatistics) {
        print("fault case: \(name): delivered \(statistics.delivered), dropped \(statistics.dropped), flagged \(statistics.errorFlagged), skipped \(statistics.skippedErrorFrames), violations \(statistics.driverViolations), requeue failures \(statistics.requeueFailures), last violation: \(statistics.lastViolation ?? "none")")
    }

    // MARK: - Impossible answers

    private func assertViolationIsContained(_ fault: SimulatedFault, _ layout: Layout, expecting text: String,
                                            file: StaticString = #filePath, line: UInt = #line) throws {
        let context = "\(fault) \(layout)"
        let rig = try SimRig(layout)
        try rig.pin.start(AllocatorSelection(frameCount: 4))
        // Hold a frame, so that indexNotQueued has a held buffer to report.
        let held = try unwrapPointer(try rig.pin.next(), file: file, line: line)
        var last = held.info.sequence
        for _ in 0..<2 {
            let pointer = try unwrapPointer(try rig.pin.next(), file: file, line: line)
            last = pointer.info.sequence
        }
        rig.inject(fault)
        let payloadSizes = rig.payloadSizes
        var delivered: [UInt32] = []
        var indexes = Set<Int>()
        for _ in 0..<16 {
            var pointer = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)), "\(context): the pin stopped delivering",
                                            file: file, line: line)
            delivered.append(pointer.info.sequence)
            indexes.insert(pointer.info.index)
            XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) }, context, file: file, line: line)
            rig.assertAccounted("\(context) after frame \(pointer.info.sequence)", file: file, line: line)
        }
        XCTAssertEqual(rig.backend.pendingFaults(path: capturePath), [], "\(context): the fault applied", file: file, line: line)
        let stats = rig.pin.statistics
        XCTAssertEqual(stats.driverViolations, 1, context, file: file, line: line)
        XCTAssertEqual(stats.dropped, 0, "\(context): the rejected buffer is a violation, not also a drop", file: file, line: line)
        XCTAssertEqual(stats.delivered + stats.driverViolations, Int(stats.lastSequence! - stats.firstSequence!) + 1,
                       "\(context): every sequence number is delivered or counted", file: file, line: line)
        XCTAssertTrue(stats.lastViolation?.contains(text) ?? false, "\(context): \(stats.lastViolation ?? "no violation recorded")", file: file, line: line)
        XCTAssertFalse(delivered.contains(last + 1), "\(context): the frame of the impossible answer was delivered", file: file, line: line)
        XCTAssertEqual(delivered.first, last + 2, "\(context): the next sound frame follows", file: file, line: line)
        XCTAssertEqual(delivered, Array(delivered.sorted()), file: file, line: line)
        XCTAssertEqual(stats.delivered, 3 + 16, file: file, line: line)
        XCTAssertTrue(rig.pin.isStreaming, file: file, line: line)
        XCTAssertNil(rig.pin.failure, file: file, line: line)
        XCTAssertTrue(held.isValid, "\(context): the held frame survives", file: file, line: line)
        _ = consume held
        // No buffer lost: all four keep circulating and are accounted for.
        for _ in 0..<8 {
            let pointer = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)), file: file, line: line)
            indexes.insert(pointer.info.index)
        }
        XCTAssertEqual(indexes, Set(0..<4), "\(context): a buffer stopped circulating", file: file, line: line)
        let counts = rig.pin.bufferCounts
        XCTAssertEqual(counts.queued + counts.held, 4, context, file: file, line: line)
        XCTAssertEqual(counts.held, 1, "\(context): only the leading edge holds a frame", file: file, line: line)
        XCTAssertEqual(rig.queue.dequeuedCount, 1, "\(context): the driver has every other buffer", file: file, line: line)
        rig.assertAccounted(context, file: file, line: line)
        report("\(fault) (\(layout))", stats)
        rig.pin.stop()
        rig.assertTornDown(context, file: file, line: line)
    }

    func testOutOfRangeIndexIsCountedNotDeliveredAndNoBufferIsLost() throws {
        for layout in Layout.allCases {
            try assertViolationIsContained(.outOfRangeIndex, layout, expecting: "index 4, outside 0..<4")
        }
    }

    func testIndexNotQueuedIsCountedNotDeliveredAndNoBufferIsLost() throws {
        for layout in Layout.allCases {
            try assertViolationIsContained(.indexNotQueued, layout, expecting: "which was not queued")
        }
    }

    func testBytesUsedOverLengthIsCountedNotDeliveredAndNoBufferIsLost() throws {
        for layout in Layout.allCases {
            try assertViolationIsContained(.bytesUsedOverLength, layout, expecting: "plane 0: bytesused")
        }
    }

    func testDataOffsetNotBelowBytesUsedIsCountedNotDeliveredAndNoBufferIsLost() throws {
        try assertViolationIsContained(.dataOffsetNotBelowBytesUsed, .multiPlanar, expecting: "data_offset 57728 >= bytesused 57728")
    }

    /// Several impossible answers in a row: each is counted once, streaming goes on.
    func testAStormOfImpossibleAnswersIsSurvived() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start(AllocatorSelection(frameCount: 5))
            let held = try unwrapPointer(try rig.pin.next())
            XCTAssertTrue(try rig.pin.advance())
            var faults: [SimulatedFault] = [.outOfRangeIndex, .bytesUsedOverLength, .indexNotQueued, .outOfRangeIndex, .bytesUsedOverLength]
            if layout.isMultiplanar { faults.append(.dataOffsetNotBelowBytesUsed) }
            for fault in faults { rig.inject(fault) }
            let payloadSizes = rig.payloadSizes
            for _ in 0..<20 {
                var pointer = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)), "\(layout): stalled")
                XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
                rig.assertAccounted("\(layout)")
            }
            XCTAssertEqual(rig.pin.statistics.driverViolations, faults.count, "\(layout)")
            XCTAssertEqual(rig.backend.pendingFaults(path: capturePath), [])
            XCTAssertTrue(held.isValid)
            _ = consume held
            rig.assertAccounted("\(layout) at the end")
            rig.pin.stop()
            rig.assertTornDown("\(layout)")
        }
    }

    // MARK: - Error frames and drops

    func testErrorFlaggedFrameIsDeliveredAndCounted() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, errorFramePolicy: .deliver)
            try rig.pin.start()
            XCTAssertTrue(gotFrame(try rig.pin.next()))
            rig.inject(.errorFlag)
            var flagged: [UInt32] = []
            var sequences: [UInt32] = []
            let payloadSizes = rig.payloadSizes
            for _ in 0..<5 {
                var pointer = try unwrapPointer(try rig.pin.next())
                sequences.append(pointer.info.sequence)
                if pointer.info.hasError { flagged.append(pointer.info.sequence) }
                XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            }
            XCTAssertEqual(flagged, [1], "\(layout): the frame after the injection carries V4L2_BUF_FLAG_ERROR")
            XCTAssertEqual(sequences, [1, 2, 3, 4, 5])
            let stats = rig.pin.statistics
            XCTAssertEqual(stats.errorFlagged, 1)
            XCTAssertEqual(stats.skippedErrorFrames, 0)
            XCTAssertEqual(stats.delivered, 6)
            XCTAssertEqual(stats.dropped, 0)
            report("errorFlag deliver (\(layout))", stats)
            rig.pin.stop()
        }
    }

    /// An error frame with nothing in it (bytesused 0, as uvcvideo's nodrop=1 can hand back) is
    /// an error frame, not a driver violation: the error-frame policy decides, and deliver delivers it.
    func testAnEmptyErrorFlaggedFrameFollowsTheErrorFramePolicy() throws {
        for policy in ErrorFramePolicy.allCases {
            let rig = try SimRig(.singlePlanar, errorFramePolicy: policy)
            try rig.pin.start(AllocatorSelection(frameCount: 4))
            XCTAssertTrue(gotFrame(try rig.pin.next()))
            rig.inject(.errorFlag)
            rig.inject(.bytesUsedZero)
            var empty: [UInt32] = []
            for _ in 0..<3 {
                var pointer = try unwrapPointer(try rig.pin.next())
                if pointer.info.hasError {
                    XCTAssertEqual(pointer.info.planes[0].bytesUsed, 0)
                    XCTAssertEqual(try pointer.withLockedPayload { $0.plane(0).byteCount }, 0, "an empty payload, nothing read past it")
                    empty.append(pointer.info.sequence)
                }
            }
            let stats = rig.pin.statistics
            report("empty error frame (\(policy))", stats)
            XCTAssertEqual(stats.driverViolations, 0, "\(policy): \(stats.lastViolation ?? "")")
            XCTAssertEqual(stats.errorFlagged, 1, "\(policy)")
            XCTAssertEqual(empty, policy == .deliver ? [1] : [], "\(policy)")
            XCTAssertEqual(stats.skippedErrorFrames, policy == .skip ? 1 : 0, "\(policy)")
            rig.pin.stop()
        }
    }

    func testErrorFlaggedFrameIsSkippedAndCounted() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, errorFramePolicy: .skip)
            try rig.pin.start(AllocatorSelection(frameCount: 4))
            XCTAssertTrue(gotFrame(try rig.pin.next()))
            rig.inject(.errorFlag)
            var sequences: [UInt32] = []
            for _ in 0..<5 {
                let pointer = try unwrapPointer(try rig.pin.next())
                XCTAssertFalse(pointer.info.hasError, "\(layout): a flagged frame was delivered despite .skip")
                XCTAssertEqual(pointer.info.droppedBefore, 0, "a skipped frame is not a drop")
                sequences.append(pointer.info.sequence)
            }
            XCTAssertEqual(sequences, [2, 3, 4, 5, 6], "\(layout): frame 1 was skipped")
            let stats = rig.pin.statistics
            XCTAssertEqual(stats.errorFlagged, 1)
            XCTAssertEqual(stats.skippedErrorFrames, 1)
            XCTAssertEqual(stats.delivered, 6)
            XCTAssertEqual(stats.dropped, 0)
            rig.assertAccounted("\(layout): the skipped frame's buffer went back to the driver")
            report("errorFlag skip (\(layout))", stats)
            rig.pin.stop()
        }
    }

    func testDroppedFramesAreCountedFromSequenceGaps() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start()
            XCTAssertEqual(try unwrapPointer(try rig.pin.next()).info.sequence, 0)
            rig.inject(.dropFrames(5))
            let afterGap = try unwrapPointer(try rig.pin.next())
            XCTAssertEqual(afterGap.info.sequence, 6, "\(layout)")
            XCTAssertEqual(afterGap.info.droppedBefore, 5)
            var pointer = try unwrapPointer(try rig.pin.next())
            XCTAssertEqual(pointer.info.droppedBefore, 0)
            let payloadSizes = rig.payloadSizes
            XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            rig.inject(.dropFrames(3))
            let second = try unwrapPointer(try rig.pin.next())
            XCTAssertEqual(second.info.sequence, 11)
            XCTAssertEqual(second.info.droppedBefore, 3)
            let stats = rig.pin.statistics
            XCTAssertEqual(stats.dropped, 8)
            XCTAssertEqual(stats.delivered, 4)
            XCTAssertEqual(stats.firstSequence, 0)
            XCTAssertEqual(stats.lastSequence, 11)
            XCTAssertEqual(stats.delivered + stats.dropped, Int(stats.lastSequence! - stats.firstSequence!) + 1,
                           "every sequence number is delivered or counted dropped")
            report("dropFrames (\(layout))", stats)
            rig.pin.stop()
        }
    }

    // MARK: - EINTR and EAGAIN storms

    func testEINTRStormIsSurvived() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            rig.inject(.interrupted(30)) // hits start's ioctls too
            try rig.pin.start(rig.selection(.userPointer))
            rig.inject(.interrupted(200))
            var sequences: [UInt32] = []
            let payloadSizes = rig.payloadSizes
            for _ in 0..<10 {
                var pointer = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)), "\(layout): EINTR stopped the stream")
                sequences.append(pointer.info.sequence)
                XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            }
            if !rig.backend.pendingFaults(path: capturePath).isEmpty {
                // The storm outlasted ten frames: keep streaming through it.
                for _ in 0..<200 where !rig.backend.pendingFaults(path: capturePath).isEmpty {
                    XCTAssertTrue(try rig.pin.advance(timeout: .milliseconds(1000)))
                }
            }
            XCTAssertEqual(rig.backend.pendingFaults(path: capturePath), [], "the storm was consumed")
            XCTAssertEqual(Array(sequences.prefix(10)), Array(0..<10), "\(layout)")
            let stats = rig.pin.statistics
            XCTAssertEqual(stats.driverViolations, 0)
            XCTAssertEqual(stats.requeueFailures, 0, "EINTR is retried, not a failure")
            XCTAssertTrue(rig.pin.isStreaming)
            rig.assertAccounted("\(layout)")
            rig.pin.stop()
            rig.assertTornDown("\(layout)")
        }
    }

    func testEAGAINStormIsSurvived() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start()
            XCTAssertTrue(gotFrame(try rig.pin.next()))
            rig.backend.resetCounters(path: capturePath)
            rig.inject(.wouldBlock(40))
            var sequences: [UInt32] = []
            for _ in 0..<5 {
                sequences.append(try unwrapPointer(try rig.pin.next(timeout: .milliseconds(1000)), "\(layout): EAGAIN stopped the stream").info.sequence)
            }
            XCTAssertEqual(sequences, [1, 2, 3, 4, 5])
            XCTAssertEqual(rig.backend.pendingFaults(path: capturePath), [])
            XCTAssertEqual(rig.count(CV4L2_VIDIOC_DQBUF), 45, "40 EAGAINs, then five frames")
            XCTAssertEqual(rig.pin.statistics.driverViolations, 0)
            XCTAssertTrue(rig.pin.isStreaming)
            rig.assertAccounted("\(layout)")
            rig.pin.stop()
        }
    }

    // MARK: - Fatal errors and disconnects

    func testFatalErrorFailsAdvanceCancelsHeldFramesAndRestartWorks() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start()
            let held = HeldFrame(try unwrapPointer(try rig.pin.next()))
            held.registerCancelHandler()
            let locked = HeldFrame(try unwrapPointer(try rig.pin.next()))
            locked.registerCancelHandler()
            try locked.lock()
            rig.inject(.fatalError)
            let error = expectCaptureError { () throws(CaptureError) in try rig.pin.advance(timeout: .milliseconds(1000)) }
            XCTAssertEqual(error?.kind, .fatalStreamingError, "\(String(describing: error))")
            XCTAssertTrue(error?.message.contains(capturePath) ?? false)
            XCTAssertTrue(error?.message.contains("fatal driver error") ?? false, "\(String(describing: error))")
            XCTAssertEqual(held.cancelRuns.value, 1, "\(layout): the held frame was cancelled")
            XCTAssertEqual(locked.cancelRuns.value, 0, "a locked frame's handler waits for the unlock")
            XCTAssertFalse(held.isValid)
            XCTAssertThrowsError(try held.lock()) { error in
                XCTAssertEqual((error as? CaptureError)?.kind, .frameCancelled)
                XCTAssertTrue("\(error)".contains("fatal driver error"), "\(error)")
            }
            locked.unlock()
            XCTAssertEqual(locked.cancelRuns.value, 1)
            XCTAssertFalse(rig.pin.isStreaming)
            XCTAssertEqual(rig.pin.failure?.kind, .fatalStreamingError)
            let again = expectCaptureError { () throws(CaptureError) in try rig.pin.advance(timeout: .milliseconds(10)) }
            XCTAssertEqual(again?.kind, .fatalStreamingError, "a failed pin keeps failing until restarted")
            XCTAssertEqual(rig.pin.statistics.cancelledFrames, 2)
            XCTAssertFalse(rig.queue.hasFatalError, "STREAMOFF cleared the driver's error state")
            held.release()
            locked.release()
            rig.assertTornDown("\(layout) after the fatal error")
            try rig.pin.start()
            XCTAssertNil(rig.pin.failure)
            var pointer = try unwrapPointer(try rig.pin.next())
            let payloadSizes = rig.payloadSizes
            XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            _ = consume pointer
            rig.pin.stop()
        }
    }

    func testDisconnectIsAClearError() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start()
            let held = HeldFrame(try unwrapPointer(try rig.pin.next()))
            held.registerCancelHandler()
            rig.inject(.disconnect)
            let error = expectCaptureError { () throws(CaptureError) in try rig.pin.advance(timeout: .milliseconds(1000)) }
            XCTAssertEqual(error?.kind, .disconnected, "\(String(describing: error))")
            XCTAssertTrue(error?.message.contains(capturePath) ?? false, "\(String(describing: error))")
            XCTAssertTrue(error?.message.contains("ENODEV") ?? false, "\(String(describing: error))")
            XCTAssertEqual(error?.underlying?.errno, .noSuchDevice)
            XCTAssertEqual(held.cancelRuns.value, 1)
            XCTAssertThrowsError(try held.lock()) { error in
                XCTAssertEqual((error as? CaptureError)?.kind, .frameCancelled)
                XCTAssertTrue("\(error)".contains("disconnected"), "\(error)")
            }
            XCTAssertTrue(rig.queue.isDisconnected)
            XCTAssertEqual(rig.pin.failure?.kind, .disconnected)
            held.release()
            rig.pin.stop()
            XCTAssertNil(rig.pin.allocator)
            XCTAssertEqual(rig.backend.liveMappingCount, 0, "\(layout): the pin unmapped its buffers")
            let restart = expectCaptureError { () throws(CaptureError) in try rig.pin.start() }
            XCTAssertEqual(restart?.kind, .disconnected, "\(String(describing: restart))")
            XCTAssertTrue(restart?.message.contains(capturePath) ?? false)
            XCTAssertThrowsError(try VideoDevice(path: capturePath, backend: rig.backend)) { error in
                XCTAssertEqual((error as? V4L2Error)?.errno, .noSuchDevice)
            }
        }
    }

    // MARK: - Failing ioctls at start

    private func assertStartFailure(_ name: String, request: UInt, errno: Errno, kind: AllocatorKind, layout: Layout,
                                    injectInsideInitialize: Bool = false, expectedSteps: (Int) -> [String],
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        let context = "\(name) \(kind) \(layout)"
        let rig = try SimRig(layout)
        let backend = rig.backend
        let descriptors = processDescriptorCount()
        let fault = SimulatedFault.failNext(request: request, errno: errno)
        var hook: (@Sendable () -> Void)?
        if injectInsideInitialize {
            hook = { _ = backend.injectFault(fault, path: capturePath) }
        }
        let spy = SpyAllocator(rig.makeAllocator(kind), beforeInitialize: hook)
        if !injectInsideInitialize { rig.inject(fault) }
        let selection = AllocatorSelection(candidates: [spy], consumer: ConsumerRequirements(acceptsDeviceMemory: true), frameCount: 4)
        let error = expectCaptureError({ () throws(CaptureError) in try rig.pin.start(selection) }, context, file: file, line: line)
        XCTAssertTrue(error?.message.contains(name) ?? false, "\(context): \(String(describing: error))", file: file, line: line)
        XCTAssertTrue(error?.message.contains(capturePath) ?? false, "\(context): \(String(describing: error))", file: file, line: line)
        XCTAssertTrue(error?.message.contains(errno.name) ?? false, "\(context): \(String(describing: error))", file: file, line: line)
        XCTAssertEqual(error?.underlying?.operation, name, file: file, line: line)
        XCTAssertEqual(spy.steps, expectedSteps(4), "\(context): allocator steps", file: file, line: line)
        XCTAssertEqual(spy.allocateCount, spy.freeCount, "\(context): every allocated frame was freed", file: file, line: line)
        XCTAssertFalse(rig.pin.isStreaming, file: file, line: line)
        XCTAssertEqual(rig.pin.bufferCounts.queued + rig.pin.bufferCounts.held + rig.pin.bufferCounts.free, 0, file: file, line: line)
        XCTAssertFalse(rig.queue.isStreaming, file: file, line: line)
        rig.assertTornDown("\(context): after the failed start", file: file, line: line)
        XCTAssertEqual(processDescriptorCount(), descriptors, "\(context): descriptors", file: file, line: line)
        print("fault case: \(context): start() failed: \(error.map { "\($0)" } ?? "nothing thrown")")
        // The retry succeeds with the same kind of allocator.
        let retry = try rig.pin.start(rig.selection(kind, frameCount: 4))
        XCTAssertFalse(retry.fellBackToDefault, context, file: file, line: line)
        var pointer = try unwrapPointer(try rig.pin.next(), "\(context): retry streams", file: file, line: line)
        let payloadSizes = rig.payloadSizes
        XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) }, file: file, line: line)
        _ = consume pointer
        rig.pin.stop()
        rig.assertTornDown("\(context): after the retry", file: file, line: line)
    }

    /// The framing query's capability query (CREATE_BUFS(0); it was REQBUFS(0) before issue 16)
    /// failing: nothing is initialized.
    func testFramingQueryFailureFailsStartAndRetrySucceeds() throws {
        for layout in Layout.allCases {
            try assertStartFailure("VIDIOC_CREATE_BUFS", request: CV4L2_VIDIOC_CREATE_BUFS, errno: .ioError, kind: .kernelPool,
                                   layout: layout, expectedSteps: { _ in [] })
        }
    }

    /// REQBUFS failing inside InitializeAllocator: the allocator is deleted, nothing else ran.
    func testAllocatorReqbufsFailureFailsStartAndRetrySucceeds() throws {
        for layout in Layout.allCases {
            for kind in AllocatorKind.allCases {
                try assertStartFailure("VIDIOC_REQBUFS", request: CV4L2_VIDIOC_REQBUFS, errno: .noMemory, kind: kind,
                                       layout: layout, injectInsideInitialize: true, expectedSteps: { _ in ["initialize", "delete"] })
            }
        }
    }

    func testQbufFailureAtStartFreesEverythingAndRetrySucceeds() throws {
        for layout in Layout.allCases {
            for kind in AllocatorKind.allCases {
                try assertStartFailure("VIDIOC_QBUF", request: CV4L2_VIDIOC_QBUF, errno: .invalidArgument, kind: kind,
                                       layout: layout, expectedSteps: fullLifecycle)
            }
        }
    }

    func testStreamonFailureFreesEverythingAndRetrySucceeds() throws {
        for layout in Layout.allCases {
            for kind in AllocatorKind.allCases {
                try assertStartFailure("VIDIOC_STREAMON", request: CV4L2_VIDIOC_STREAMON, errno: .ioError, kind: kind,
                                       layout: layout, expectedSteps: fullLifecycle)
            }
        }
    }

    /// A QBUF failing while streaming: counted, retried before the next wait, nothing lost.
    func testQbufFailureMidStreamIsRetried() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start(AllocatorSelection(frameCount: 4))
            XCTAssertTrue(try rig.pin.advance())
            rig.inject(.failNext(request: CV4L2_VIDIOC_QBUF, errno: .invalidArgument))
            XCTAssertTrue(try rig.pin.advance()) // the previous edge's QBUF fails
            XCTAssertEqual(rig.pin.statistics.requeueFailures, 1)
            XCTAssertEqual(rig.pin.bufferCounts.free, 1, "the buffer whose QBUF failed is free, not lost")
            rig.assertAccounted("\(layout) after the failed QBUF")
            var seen = Set<Int>()
            for _ in 0..<10 {
                XCTAssertTrue(try rig.pin.advance())
                seen.insert(try unwrapPointer(rig.pin.cloneLeadingEdge()).info.index)
                rig.assertAccounted("\(layout)")
            }
            XCTAssertEqual(seen, Set(0..<4), "\(layout): the buffer was queued again")
            XCTAssertEqual(rig.pin.bufferCounts.free, 0)
            XCTAssertEqual(rig.pin.statistics.requeueFailures, 1)
            rig.pin.stop()
        }
    }
}
