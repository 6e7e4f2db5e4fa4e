import CV4L2
import FrameBridge
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// Random interleavings of everything a consumer and a misbehaving driver can do, with a
/// fixed seed, checking the pin's invariants after every step.
final class FuzzTests: XCTestCase {
    private static let rounds = 20
    private static let steps = 200

    private struct Totals {
        var delivered = 0
        var violations = 0
        var dropped = 0
        var errorFlagged = 0
        var skipped = 0
        var starvationCancels = 0
        var cancelled = 0
        var restarts = 0
        var faults = 0
        var checkedPayloads = 0
    }

    func testRandomInterleavingsKeepTheInvariants() throws {
        var random = SplitMix64(seed: 0x00F2_A3EB_41D6_E5C7)
        var totals = Totals()
        let descriptorsBefore = processDescriptorCount()
        for round in 0..<Self.rounds {
            try runRound(round, random: &random, totals: &totals)
            if testRun?.failureCount ?? 0 > 0 { break } // one broken round says enough
        }
        XCTAssertEqual(processDescriptorCount(), descriptorsBefore, "descriptors leaked over the fuzz run")
        print("fuzz: \(Self.rounds) rounds x \(Self.steps) steps: delivered \(totals.delivered), violations \(totals.violations), dropped \(totals.dropped), error-flagged \(totals.errorFlagged) (skipped \(totals.skipped)), starvation cancels \(totals.starvationCancels), cancelled \(totals.cancelled), restarts \(totals.restarts), faults injected \(totals.faults), payloads checked \(totals.checkedPayloads)")
        XCTAssertGreaterThan(totals.delivered, 1000, "the fuzz streamed")
        XCTAssertGreaterThan(totals.violations, 10, "the fuzz exercised impossible answers")
        XCTAssertGreaterThan(totals.restarts, 0)
        XCTAssertGreaterThan(totals.starvationCancels, 0)
    }

    private func runRound(_ round: Int, random: inout SplitMix64, totals: inout Totals) throws {
        let layout = Layout.allCases[round % 2]
        let kind = AllocatorKind.allCases[(round / 2) % 3]
        let policy: StarvationPolicy = round % 3 == 2 ? .cancelOldestUnlocked : .block
        let errorPolicy: ErrorFramePolicy = round % 4 == 3 ? .skip : .deliver
        let bufferCount = 4 + round % 3
        let context = "round \(round) (\(layout), \(kind), \(policy), \(errorPolicy), \(bufferCount) buffers)"
        let rig = try SimRig(layout, width: 160, height: 120, starvationPolicy: policy, errorFramePolicy: errorPolicy)
        let payloadSizes = rig.payloadSizes
        try rig.pin.start(rig.selection(kind, frameCount: bufferCount))
        XCTAssertEqual(rig.queue.bufferCount, bufferCount, context)

        var held: [HeldFrame] = []
        var previous = CaptureStatistics()
        var lastSequence: UInt32?
        /// The buffer under the leading edge: the last frame next() returned.
        var edgeIndex: Int?

        func fail(_ message: String, _ step: Int) {
            XCTFail("\(context) step \(step): \(message)")
        }

        func check(_ frame: HeldFrame, _ step: Int) {
            do {
                if let problem = try frame.withPayload({ payloadProblem($0, payloadSizes: payloadSizes) }) {
                    fail(problem, step)
                }
                totals.checkedPayloads += 1
            } catch {
                fail("reading a locked frame: \(error)", step)
            }
        }

        func addStatistics(_ stats: CaptureStatistics) {
            totals.delivered += stats.delivered
            totals.violations += stats.driverViolations
            totals.dropped += stats.dropped
            totals.errorFlagged += stats.errorFlagged
            totals.skipped += stats.skippedErrorFrames
            totals.starvationCancels += stats.starvationCancels
            totals.cancelled += stats.cancelledFrames
        }

        /// Stop, check every held frame is cancelled (handlers by lock state), release all in random order.
        func stopAndRelease(_ step: Int) {
            rig.pin.stop()
            for frame in held {
                if frame.isValid { fail("frame \(frame.sequence) is still valid after stop", step) }
                if frame.hasHandler {
                    let expected = frame.isLocked ? 0 : 1
                    if frame.cancelRuns.value != expected {
                        fail("frame \(frame.sequence) (locked: \(frame.isLocked)) cancel handler ran \(frame.cancelRuns.value) times after stop", step)
                    }
                }
                if !frame.isLocked {
                    do {
                        try frame.lock()
                        fail("lock of frame \(frame.sequence) succeeded after stop", step)
                    } catch {
                        if error.kind != .frameCancelled { fail("lock after stop: \(error.kind)", step) }
                    }
                }
            }
            while !held.isEmpty {
                let frame = held.remove(at: Int(random.next() % UInt64(held.count)))
                if frame.isLocked && random.next() % 2 == 0 {
                    frame.unlock()
                    if frame.hasHandler && frame.cancelRuns.value != 1 { fail("a locked frame's handler did not run on unlock", step) }
                }
                frame.release()
            }
            if rig.pin.livePointers != 0 { fail("\(rig.pin.livePointers) pointers alive after releasing all", step) }
            if rig.pin.allocator != nil { fail("the allocator was not deleted", step) }
            if rig.queue.bufferCount != 0 { fail("\(rig.queue.bufferCount) buffers left on the device", step) }
            if rig.backend.liveMappingCount != 0 { fail("\(rig.backend.liveMappingCount) mappings leaked", step) }
            if rig.backend.internalMappingCount != 0 { fail("the simulator still maps \(rig.backend.internalMappingCount) buffers", step) }
        }

        for step in 0..<Self.steps {
            let action = random.next() % 100
            switch action {
            case 0..<38: // next()
                let queued = rig.pin.bufferCounts.queued
                // With every buffer out of the driver's hands a frame can still come: the frame
                // under the leading edge gives way when only the edge holds it, and under
                // cancel-oldest any unlocked frame does.
                let lockedBuffers = Set(held.filter { $0.isLocked && $0.isValid }.map(\.index)).count
                let edgeAlone = edgeIndex.map { edge in !held.contains { $0.isValid && $0.index == edge } } ?? false
                let starved = queued == 0 && !edgeAlone && (policy == .block || lockedBuffers == bufferCount)
                if starved {
                    // Starved: must not deliver (and must not wait long).
                    do {
                        if gotFrame(try rig.pin.next(timeout: .milliseconds(0))) { fail("a frame arrived with every buffer held", step) }
                    } catch {
                        fail("next() while starved: \(error)", step)
                    }
                    break
                }
                let pointer: StreamPointer?
                do {
                    pointer = try rig.pin.next(timeout: .milliseconds(500))
                } catch {
                    fail("next(): \(error)", step)
                    return
                }
                guard let pointer else {
                    fail("no frame although \(queued) buffers are queued; accounting: \(rig.accountingProblem() ?? "consistent")", step)
                    return
                }
                let frame = HeldFrame(pointer)
                if let lastSequence, frame.sequence <= lastSequence {
                    fail("sequence \(frame.sequence) after \(lastSequence)", step)
                }
                lastSequence = frame.sequence
                edgeIndex = frame.index
                if errorPolicy == .skip && frame.info.hasError { fail("an error frame was delivered with .skip", step) }
                if random.next() % 2 == 0 {
                    do {
                        try frame.lock()
                        check(frame, step)
                        if random.next() % 3 != 0 { frame.unlock() }
                    } catch {
                        fail("lock of a fresh frame: \(error)", step)
                    }
                }
                if random.next() % 3 == 0 { frame.registerCancelHandler() }
                if random.next() % 10 < 6 { held.append(frame) } else { frame.release() }
            case 38..<48: // clone
                guard !held.isEmpty else { break }
                let source = held[Int(random.next() % UInt64(held.count))]
                let clone = source.clone()
                if clone.isValid != source.isValid { fail("a clone's validity differs from its source", step) }
                if random.next() % 2 == 0 { clone.registerCancelHandler() }
                held.append(clone)
            case 48..<66: // release in random order
                guard !held.isEmpty else { break }
                held.remove(at: Int(random.next() % UInt64(held.count))).release()
            case 66..<78: // lock / unlock
                guard !held.isEmpty else { break }
                let frame = held[Int(random.next() % UInt64(held.count))]
                if frame.isLocked {
                    if frame.isValid { check(frame, step) }
                    frame.unlock()
                } else {
                    let valid = frame.isValid
                    do {
                        try frame.lock()
                        if !valid { fail("lock of a cancelled frame succeeded", step) }
                        check(frame, step)
                    } catch {
                        if valid { fail("lock of a valid frame failed: \(error)", step) }
                        if error.kind != .frameCancelled { fail("lock failed with \(error.kind)", step) }
                    }
                }
            case 78..<96: // a fault
                let faults: [SimulatedFault] = [
                    .outOfRangeIndex, .indexNotQueued, .bytesUsedOverLength, .dataOffsetNotBelowBytesUsed, .errorFlag,
                    .dropFrames(Int(random.next() % 3) + 1), .interrupted(Int(random.next() % 20) + 1),
                    .wouldBlock(Int(random.next() % 10) + 1),
                ]
                var fault = faults[Int(random.next() % UInt64(faults.count))]
                if fault == .dataOffsetNotBelowBytesUsed && !layout.isMultiplanar { fault = .bytesUsedOverLength }
                rig.inject(fault)
                totals.faults += 1
            default: // stop, release everything, start again (2 in 100), else nothing
                guard action >= 98 else { break }
                stopAndRelease(step)
                addStatistics(rig.pin.statistics)
                rig.backend.clearFaults(path: capturePath)
                do {
                    try rig.pin.start(rig.selection(kind, frameCount: bufferCount))
                } catch {
                    fail("restart: \(error)", step)
                    return
                }
                totals.restarts += 1
                previous = CaptureStatistics()
                lastSequence = nil
                edgeIndex = nil
            }

            // Invariants after every step.
            let stats = rig.pin.statistics
            let grew = stats.delivered >= previous.delivered && stats.dropped >= previous.dropped
                && stats.errorFlagged >= previous.errorFlagged && stats.skippedErrorFrames >= previous.skippedErrorFrames
                && stats.driverViolations >= previous.driverViolations && stats.requeueFailures >= previous.requeueFailures
                && stats.starvationWaits >= previous.starvationWaits && stats.starvationCancels >= previous.starvationCancels
                && stats.cancelledFrames >= previous.cancelledFrames
            if !grew { fail("statistics went down: \(previous) -> \(stats)", step) }
            previous = stats
            if let problem = rig.accountingProblem() { fail("buffer accounting: \(problem)", step) }
            if rig.queue.bufferCount != bufferCount { fail("the device has \(rig.queue.bufferCount) buffers", step) }
            if rig.pin.livePointers != held.count { fail("\(rig.pin.livePointers) live pointers, \(held.count) held", step) }
            if stats.requeueFailures != 0 { fail("\(stats.requeueFailures) QBUF failures", step) }
            for frame in held where frame.hasHandler {
                let expected = frame.isValid || frame.isLocked ? 0 : 1
                if frame.cancelRuns.value != expected {
                    fail("frame \(frame.sequence) (valid \(frame.isValid), locked \(frame.isLocked)) handler ran \(frame.cancelRuns.value) times", step)
                }
            }
            if policy == .block && held.contains(where: { !$0.isValid }) { fail("a frame was cancelled under .block", step) }
            if testRun?.failureCount ?? 0 > 0 { return }
        }
        stopAndRelease(Self.steps)
        addStatistics(rig.pin.statistics)
        XCTAssertEqual(rig.backend.liveMappingCount, 0, context)
        XCTAssertEqual(rig.backend.openDescriptorCount(path: exporterPath), 0, context)
    }
}
