import FrameBridge
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// Allocator selection (the graph manager's analog): rejections with reasons, rejected
/// allocators never initialized, fallback to the kernel pool, device memory only for a
/// consumer that accepts it.
final class SelectionTests: XCTestCase {
    /// A memory kind the device lacks and plane sizes below sizeimage: both rejected with
    /// reasons naming the kind and the sizes, neither initialized, the kernel pool chosen and streaming.
    func testMissingMemoryKindAndSmallPlanesAreRejectedAndTheDefaultStreams() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, memoryKinds: [.mmap, .dmabuf])
            let framing = rig.pin.framing
            XCTAssertEqual(framing.memoryKinds, [.mmap, .dmabuf])
            let lacking = SpyAllocator(UserPointerAllocator())
            var smallSizes = framing.planeSizes
            smallSizes[smallSizes.count - 1] = 1000
            let smallPlane = smallSizes.count - 1
            let small = SpyAllocator(DMABufAllocator(
                exporter: V4L2BufferExporter(path: exporterPath, backend: rig.backend), planeSizes: smallSizes))
            let selection = AllocatorSelection(candidates: [lacking, small], consumer: ConsumerRequirements(acceptsDeviceMemory: true))
            let result = try rig.pin.start(selection)
            XCTAssertTrue(result.chosen is KernelPoolAllocator, "\(layout): chose \(result.chosen.name)")
            XCTAssertTrue(result.fellBackToDefault)
            XCTAssertEqual(result.rejections.map(\.allocator), [lacking.name, small.name])
            XCTAssertEqual(result.rejections.count, 2)
            let kindReason = result.rejections[0].reason
            XCTAssertTrue(kindReason.contains("memory kind userptr is not supported by \(capturePath)"), kindReason)
            XCTAssertTrue(kindReason.contains("mmap, dmabuf"), "names what the device supports: \(kindReason)")
            let sizeReason = result.rejections[1].reason
            XCTAssertTrue(sizeReason.contains("frame size 1000 bytes is below the minimum \(framing.items[smallPlane].frameSizeMinimum)"), sizeReason)
            XCTAssertTrue(sizeReason.contains("plane \(smallPlane)"), sizeReason)
            XCTAssertEqual(result.rejections[1].description, "\(small.name): \(sizeReason)")
            XCTAssertEqual(lacking.steps, [], "\(layout): a rejected allocator must never be initialized")
            XCTAssertEqual(small.steps, [], "\(layout): a rejected allocator must never be initialized")
            XCTAssertEqual(rig.exporterQueue.bufferCount, 0, "the rejected dmabuf allocator exported nothing")
            XCTAssertTrue(rig.pin.allocator is KernelPoolAllocator)
            XCTAssertEqual(rig.queue.memory, .mmap)
            XCTAssertEqual(rig.pin.selection?.rejections.count, 2, "the pin keeps the last selection")
            var pointer = try unwrapPointer(try rig.pin.next())
            let payloadSizes = rig.payloadSizes
            XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            _ = consume pointer
            rig.pin.stop()
            rig.assertTornDown("\(layout)")
        }
    }

    func testFewerPlanesThanTheFormatIsRejected() throws {
        let rig = try SimRig(.multiPlanar)
        let offer = OfferOnlyAllocator(name: "one-plane", offer: AllocatorOffer(memoryKind: .userPointer, planeSizes: [1 << 20]))
        let reason = AllocatorSelection().rejectionReason(offer, framing: rig.pin.framing)
        XCTAssertEqual(reason, "it provides 1 plane(s) but the format has 2")
    }

    func testNoCandidatesIsNotAFallback() throws {
        let rig = try SimRig(.singlePlanar)
        let result = AllocatorSelection().select(framing: rig.pin.framing)
        XCTAssertTrue(result.chosen is KernelPoolAllocator)
        XCTAssertFalse(result.fellBackToDefault, "no candidates: the default is simply the choice")
        XCTAssertEqual(result.rejections, [])
        XCTAssertEqual(result.frameCount, 4)
    }

    func testTheFirstFittingCandidateWinsInPreferenceOrder() throws {
        let rig = try SimRig(.singlePlanar)
        let first = SpyAllocator(UserPointerAllocator())
        let second = SpyAllocator(UserPointerAllocator())
        let result = AllocatorSelection(candidates: [first, second]).select(framing: rig.pin.framing)
        XCTAssertTrue(result.chosen === first)
        XCTAssertFalse(result.fellBackToDefault)
        XCTAssertEqual(first.steps, [], "select() initializes nothing")
        XCTAssertEqual(second.steps, [])
    }

    /// Device memory (dmabuf) is the kernel-mode allocator analog: rejected for a CPU-only
    /// consumer, chosen for one that accepts device memory.
    func testDeviceMemoryIsChosenOnlyForAConsumerThatAcceptsIt() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            let dmabuf = SpyAllocator(rig.makeAllocator(.dmabuf))
            XCTAssertTrue(dmabuf.offer.deviceMemory)
            let cpuOnly = AllocatorSelection(candidates: [dmabuf], consumer: ConsumerRequirements(needsCPUAccess: true, acceptsDeviceMemory: false))
            let rejected = try rig.pin.start(cpuOnly)
            XCTAssertTrue(rejected.chosen is KernelPoolAllocator, "\(layout)")
            XCTAssertTrue(rejected.fellBackToDefault)
            XCTAssertEqual(rejected.rejections.count, 1)
            let reason = rejected.rejections.first?.reason ?? ""
            XCTAssertTrue(reason.contains("device memory (dmabuf)") && reason.contains("does not"), reason)
            XCTAssertEqual(dmabuf.steps, [], "never initialized when rejected")
            XCTAssertEqual(rig.queue.memory, .mmap)
            rig.pin.stop()

            let accepting = AllocatorSelection(candidates: [dmabuf], consumer: ConsumerRequirements(acceptsDeviceMemory: true))
            let chosen = try rig.pin.start(accepting)
            XCTAssertTrue(chosen.chosen === dmabuf, "\(layout): \(chosen.rejections)")
            XCTAssertFalse(chosen.fellBackToDefault)
            XCTAssertEqual(rig.queue.memory, .dmabuf)
            XCTAssertTrue(gotFrame(try rig.pin.next()))
            rig.pin.stop()
            XCTAssertEqual(dmabuf.steps, fullLifecycle(4))
            rig.assertTornDown("\(layout)")
        }
    }

    func testMemoryTheCPUCannotMapIsRejectedForACPUConsumer() throws {
        let rig = try SimRig(.singlePlanar)
        let opaque = OfferOnlyAllocator(name: "opaque", offer: AllocatorOffer(memoryKind: .dmabuf, cpuAccessible: false, deviceMemory: true))
        let cpu = AllocatorSelection(candidates: [opaque], consumer: ConsumerRequirements(needsCPUAccess: true, acceptsDeviceMemory: true))
        let result = cpu.select(framing: rig.pin.framing)
        XCTAssertTrue(result.chosen is KernelPoolAllocator)
        XCTAssertTrue(result.rejections.first?.reason.contains("cannot be mapped") ?? false, "\(result.rejections)")
        let gpu = AllocatorSelection(candidates: [opaque], consumer: ConsumerRequirements(needsCPUAccess: false, acceptsDeviceMemory: true))
        XCTAssertTrue(gpu.select(framing: rig.pin.framing).chosen === opaque)
    }

    func testFrameCountOutOfRangeIsRejected() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, minimumBuffers: 3)
            let framing = rig.pin.framing
            for wanted in [2, 33] {
                let spy = SpyAllocator(UserPointerAllocator())
                let selection = AllocatorSelection(candidates: [spy], frameCount: wanted)
                let result = try rig.pin.start(selection)
                XCTAssertTrue(result.chosen is KernelPoolAllocator, "\(layout) \(wanted)")
                XCTAssertEqual(result.rejections.first?.reason, "frame count \(wanted) is outside the range 3...32")
                XCTAssertEqual(spy.steps, [])
                // The fallback gets the wanted count clamped to the framing's range.
                XCTAssertEqual(result.frameCount, min(max(wanted, framing.framesMinimum), framing.framesMaximum))
                XCTAssertEqual(rig.queue.bufferCount, result.frameCount)
                rig.pin.stop()
            }
            let inRange = AllocatorSelection(candidates: [UserPointerAllocator()], frameCount: 3).select(framing: framing)
            XCTAssertFalse(inRange.fellBackToDefault, "3 is in range: \(inRange.rejections)")
        }
    }

    func testAnAllocatorWithTooFewFramesIsRejected() throws {
        let rig = try SimRig(.singlePlanar, minimumBuffers: 3)
        let limited = OfferOnlyAllocator(name: "two-frames", offer: AllocatorOffer(memoryKind: .userPointer, framesMaximum: 2))
        let reason = AllocatorSelection().rejectionReason(limited, framing: rig.pin.framing)
        XCTAssertEqual(reason, "it provides at most 2 frames but 5 are needed")
    }

    func testAlignmentThatIsNotAMultipleOfThePageIsRejected() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            let framing = rig.pin.framing
            for alignment in [64, pageSize / 2, pageSize + pageSize / 2] {
                let spy = SpyAllocator(UserPointerAllocator(alignment: alignment))
                let result = AllocatorSelection(candidates: [spy]).select(framing: framing)
                XCTAssertTrue(result.chosen is KernelPoolAllocator, "\(layout) alignment \(alignment)")
                XCTAssertEqual(result.rejections.first?.reason, "alignment \(alignment) is not a multiple of the required \(pageSize)")
                XCTAssertEqual(spy.steps, [])
            }
            let twoPages = AllocatorSelection(candidates: [UserPointerAllocator(alignment: 2 * pageSize)]).select(framing: framing)
            XCTAssertFalse(twoPages.fellBackToDefault, "two pages is a multiple of the page: \(twoPages.rejections)")
            // The pin really streams with the two-page-aligned allocator.
            let result = try rig.pin.start(AllocatorSelection(candidates: [UserPointerAllocator(alignment: 2 * pageSize)]))
            XCTAssertEqual(result.chosen.memoryKind, .userPointer)
            var pointer = try unwrapPointer(try rig.pin.next())
            let aligned = try pointer.withLockedPayload { Int(bitPattern: $0.unsafePlaneMemory(0).baseAddress) % (2 * pageSize) == 0 }
            XCTAssertTrue(aligned)
            _ = consume pointer
            rig.pin.stop()
        }
    }

    func testRejectionsAreCodable() throws {
        let rig = try SimRig(.singlePlanar, memoryKinds: [.mmap])
        let result = AllocatorSelection(candidates: [UserPointerAllocator()]).select(framing: rig.pin.framing)
        let rejection = try XCTUnwrap(result.rejections.first)
        let data = try JSONEncoder().encode(rejection)
        XCTAssertEqual(try JSONDecoder().decode(AllocatorRejection.self, from: data), rejection)
        XCTAssertEqual(rejection.allocator, "user-pointer (userptr)")
        XCTAssertTrue(rejection.reason.contains("(it supports mmap)"), rejection.reason)
    }
}
