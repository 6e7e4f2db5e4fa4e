import CV4L2
import FrameBridge
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import SystemPackage
import XCTest

/// Capture through each allocator (MMAP pool, USERPTR, DMABUF from a second device), single-
/// and multi-planar: the bytes are the simulator's, the dispatch steps run in AVStream's order,
/// and nothing leaks after stop.
final class AllocatorTests: XCTestCase {
    private func captureAndCheck(_ kind: AllocatorKind, _ layout: Layout, frameCount: Int = 5, frames: Int = 12,
                                 file: StaticString = #filePath, line: UInt = #line) throws {
        let context = "\(kind) \(layout)"
        let rig = try SimRig(layout)
        let descriptorsBefore = processDescriptorCount()
        let simulatorDescriptorsBefore = rig.backend.openDescriptorCount
        let spy = SpyAllocator(rig.makeAllocator(kind))
        let result = try rig.pin.start(AllocatorSelection(
            candidates: [spy], consumer: ConsumerRequirements(acceptsDeviceMemory: kind == .dmabuf), frameCount: frameCount))
        XCTAssertTrue(result.chosen === spy, "\(context): chose \(result.chosen.name), rejections \(result.rejections)", file: file, line: line)
        XCTAssertFalse(result.fellBackToDefault, context, file: file, line: line)
        XCTAssertEqual(result.rejections, [], context, file: file, line: line)
        XCTAssertTrue(rig.pin.allocator === spy, context, file: file, line: line)
        XCTAssertEqual(rig.queue.bufferCount, frameCount, context, file: file, line: line)
        XCTAssertEqual(rig.queue.memory, kind.memory, context, file: file, line: line)
        XCTAssertEqual(rig.queue.queuedCount, frameCount, "\(context): every frame is queued at start", file: file, line: line)
        XCTAssertEqual(spy.steps, ["initialize"] + Array(repeating: "allocate", count: frameCount), context, file: file, line: line)
        switch kind {
        case .kernelPool:
            XCTAssertEqual(rig.backend.liveMappingCount, frameCount * layout.planeCount, "\(context): one mmap per plane", file: file, line: line)
            XCTAssertEqual(processDescriptorCount(), descriptorsBefore + frameCount * layout.planeCount,
                           "\(context): the driver's memfd per plane", file: file, line: line)
        case .userPointer:
            XCTAssertEqual(rig.backend.liveMappingCount, 0, file: file, line: line)
        case .dmabuf:
            XCTAssertEqual(rig.exporterQueue.bufferCount, frameCount, "\(context): the exporter's MMAP buffers back the frames", file: file, line: line)
            XCTAssertEqual(rig.exporterQueue.memory, .mmap, file: file, line: line)
            XCTAssertEqual(processDescriptorCount(), descriptorsBefore + 2 * frameCount * layout.planeCount + 1,
                           "\(context): per plane the exporter's memfd and its dmabuf, plus the exporter's device", file: file, line: line)
        }

        var previous: UInt32?
        var indexes = Set<Int>()
        for _ in 0..<frames {
            var pointer = try unwrapPointer(try rig.pin.next(timeout: .milliseconds(2000)), "\(context): no frame", file: file, line: line)
            let info = pointer.info
            indexes.insert(info.index)
            if let previous { XCTAssertEqual(info.sequence, previous + 1, context, file: file, line: line) }
            previous = info.sequence
            XCTAssertEqual(info.planeCount, layout.planeCount, context, file: file, line: line)
            XCTAssertFalse(info.hasError, file: file, line: line)
            XCTAssertTrue(info.isMonotonic, file: file, line: line)
            XCTAssertEqual(info.droppedBefore, 0, file: file, line: line)
            for p in 0..<info.planeCount {
                XCTAssertEqual(info.planes[p].bytesUsed, rig.sizeImages[p], "\(context) plane \(p) bytesused", file: file, line: line)
                XCTAssertEqual(info.planes[p].dataOffset, p == 0 ? Int(layout.dataOffset) : 0, "\(context) plane \(p)", file: file, line: line)
                XCTAssertEqual(info.planes[p].payloadSize, rig.payloadSizes[p], file: file, line: line)
                XCTAssertGreaterThanOrEqual(info.planes[p].length, rig.sizeImages[p], file: file, line: line)
            }
            XCTAssertEqual(info.payloadSize, rig.payloadSizes.reduce(0, +), file: file, line: line)
            let payloadSizes = rig.payloadSizes
            let problem = try pointer.withLockedPayload { payload -> String? in
                for p in 0..<payload.planeCount {
                    let memory = payload.unsafePlaneMemory(p)
                    if kind == .userPointer {
                        if Int(bitPattern: memory.baseAddress) % pageSize != 0 { return "plane \(p) memory is not page-aligned" }
                        let rounded = (rig.sizeImages[p] + pageSize - 1) / pageSize * pageSize
                        if memory.count != rounded { return "plane \(p) has \(memory.count) bytes, expected \(rounded)" }
                    }
                }
                return payloadProblem(payload, payloadSizes: payloadSizes)
            }
            XCTAssertNil(problem, context, file: file, line: line)
            XCTAssertFalse(pointer.isLocked, file: file, line: line)
        }
        XCTAssertEqual(indexes.count, frameCount, "\(context): every buffer circulated", file: file, line: line)
        XCTAssertEqual(rig.pin.statistics.delivered, frames, file: file, line: line)
        XCTAssertEqual(rig.pin.statistics.driverViolations, 0, file: file, line: line)
        XCTAssertEqual(rig.pin.statistics.requeueFailures, 0, file: file, line: line)
        rig.assertAccounted(context, file: file, line: line)

        rig.pin.stop()
        XCTAssertEqual(spy.steps, fullLifecycle(frameCount), "\(context): InitializeAllocator, Allocate per frame, Free per frame, DeleteAllocator", file: file, line: line)
        XCTAssertEqual(spy.allocateCount, spy.freeCount, file: file, line: line)
        let cpu = spy.cpuAccessCalls
        if kind == .dmabuf {
            XCTAssertEqual(cpu.begin, frames, "\(context): every lock brackets the read with a dmabuf sync", file: file, line: line)
            XCTAssertEqual(cpu.end, frames, file: file, line: line)
        } else {
            XCTAssertEqual(cpu.begin + cpu.end, 0, "\(context): host memory needs no sync", file: file, line: line)
        }
        rig.assertTornDown(context, file: file, line: line)
        XCTAssertEqual(rig.backend.openDescriptorCount, simulatorDescriptorsBefore, "\(context): simulated descriptors", file: file, line: line)
        XCTAssertEqual(processDescriptorCount(), descriptorsBefore, "\(context): file descriptors leaked (/proc/self/fd)", file: file, line: line)
    }

    func testKernelPoolSinglePlanar() throws { try captureAndCheck(.kernelPool, .singlePlanar) }
    func testKernelPoolMultiPlanar() throws { try captureAndCheck(.kernelPool, .multiPlanar) }
    func testUserPointerSinglePlanar() throws { try captureAndCheck(.userPointer, .singlePlanar) }
    func testUserPointerMultiPlanar() throws { try captureAndCheck(.userPointer, .multiPlanar) }
    func testDMABufFromSecondDeviceSinglePlanar() throws { try captureAndCheck(.dmabuf, .singlePlanar) }
    func testDMABufFromSecondDeviceMultiPlanar() throws { try captureAndCheck(.dmabuf, .multiPlanar) }

    /// Repeated start/stop cycles with every allocator leave no descriptor or mapping behind.
    func testRepeatedCyclesDoNotLeak() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, width: 160, height: 120)
            for kind in AllocatorKind.allCases {
                try rig.pin.start(rig.selection(kind))
                XCTAssertTrue(gotFrame(try rig.pin.next()))
                rig.pin.stop()
            }
            let descriptors = processDescriptorCount()
            for cycle in 0..<15 {
                let kind = AllocatorKind.allCases[cycle % 3]
                let result = try rig.pin.start(rig.selection(kind))
                XCTAssertEqual(result.chosen.memoryKind, kind.memory)
                var pointer = try unwrapPointer(try rig.pin.next())
                let payloadSizes = rig.payloadSizes
                XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
                _ = consume pointer
                rig.pin.stop()
                rig.assertTornDown("\(layout) \(kind) cycle \(cycle)")
            }
            XCTAssertEqual(processDescriptorCount(), descriptors, "\(layout): descriptors after 15 cycles")
        }
    }

    /// The exporter's buffers are the frames' memory: what the capture device writes lands in them.
    func testDMABufFramesLiveInTheExportersMemory() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            try rig.pin.start(rig.selection(.dmabuf, frameCount: 4))
            var pointer = try unwrapPointer(try rig.pin.next())
            let planeLengths = try pointer.withLockedPayload { payload in
                (0..<payload.planeCount).map { payload.unsafePlaneMemory($0).count }
            }
            // Each plane is one of the exporter's buffers, sizeimage long (QUERYBUF's length there).
            XCTAssertEqual(planeLengths, rig.sizeImages, "\(layout)")
            XCTAssertEqual(rig.exporterQueue.bufferCount, 4)
            XCTAssertFalse(rig.exporterQueue.isStreaming, "the exporter only lends its memory")
            _ = consume pointer
            rig.pin.stop()
            rig.assertTornDown("\(layout)")
        }
    }

    /// An exporter whose buffers are smaller than the frames fails start with a clear error and
    /// leaves nothing allocated on either device.
    func testDMABufExporterWithSmallerBuffersFailsCleanly() throws {
        let rig = try SimRig(.singlePlanar, width: 640, height: 360)
        let descriptors = processDescriptorCount()
        // No format given: the exporter keeps its 320x180 format, too small for 640x360 frames.
        let spy = SpyAllocator(DMABufAllocator(exporter: V4L2BufferExporter(path: exporterPath, backend: rig.backend)))
        let error = expectCaptureError { () throws(CaptureError) in
            try rig.pin.start(AllocatorSelection(candidates: [spy], consumer: ConsumerRequirements(acceptsDeviceMemory: true)))
        }
        XCTAssertEqual(error?.kind, .allocator)
        XCTAssertTrue(error?.message.contains(exporterPath) ?? false, "\(String(describing: error))")
        XCTAssertTrue(error?.message.contains("smaller") ?? false, "\(String(describing: error))")
        XCTAssertEqual(spy.steps, ["initialize", "delete"])
        XCTAssertFalse(rig.pin.isStreaming)
        rig.assertTornDown("after the failed dmabuf start")
        XCTAssertEqual(processDescriptorCount(), descriptors)
        try rig.pin.start()
        XCTAssertTrue(gotFrame(try rig.pin.next()), "the default allocator streams after the failure")
        rig.pin.stop()
    }

    /// DMA_BUF_IOCTL_SYNC: EINTR and EAGAIN are retried, another errno fails the lock naming
    /// the ioctl, and a failed end of CPU access is counted.
    func testDMABufSyncIsCheckedAndRetried() throws {
        let rig = try SimRig(.singlePlanar)
        try rig.pin.start(rig.selection(.dmabuf))
        var pointer = try unwrapPointer(try rig.pin.next(timeout: .seconds(5)))
        let before = rig.backend.dmabufSyncCount
        rig.backend.injectDMABufSyncFailures([.interrupted, .resourceTemporarilyUnavailable])
        try pointer.lock()
        pointer.unlock()
        XCTAssertEqual(rig.backend.dmabufSyncCount - before, 4, "start (after EINTR and EAGAIN: 3 calls) and end")
        rig.backend.injectDMABufSyncFailures([.invalidArgument])
        XCTAssertThrowsError(try pointer.lock()) { error in
            XCTAssertEqual((error as? CaptureError)?.kind, .allocator)
            XCTAssertTrue("\(error)".contains("DMA_BUF_IOCTL_SYNC"), "\(error)")
        }
        XCTAssertFalse(pointer.isLocked, "a failed start of CPU access leaves the frame unlocked")
        try pointer.lock()
        rig.backend.injectDMABufSyncFailures([.invalidArgument])
        pointer.unlock()
        XCTAssertEqual(rig.pin.statistics.synchronizationFailures, 1)
        _ = consume pointer
        rig.pin.stop()
        rig.assertTornDown("dmabuf sync")
    }

    /// The kernel pool grows with VIDIOC_CREATE_BUFS while streaming; the new buffers circulate.
    func testKernelPoolGrowsWithCreateBufs() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout, width: 160, height: 120)
            let spy = SpyAllocator(KernelPoolAllocator())
            try rig.pin.start(AllocatorSelection(candidates: [spy], frameCount: 4))
            XCTAssertThrowsError(try rig.pin.addFrames(1), "only the kernel pool itself can grow, not a wrapper") { error in
                XCTAssertEqual((error as? CaptureError)?.kind, .invalidState)
            }
            rig.pin.stop()

            try rig.pin.start(AllocatorSelection(frameCount: 4))
            XCTAssertTrue(try rig.pin.advance())
            let createBefore = rig.count(CV4L2_VIDIOC_CREATE_BUFS)
            try rig.pin.addFrames(2)
            XCTAssertEqual(rig.count(CV4L2_VIDIOC_CREATE_BUFS), createBefore + 1)
            XCTAssertEqual(rig.queue.bufferCount, 6, "\(layout)")
            rig.assertAccounted("\(layout) after growing")
            var seen = Set<Int>()
            let payloadSizes = rig.payloadSizes
            for _ in 0..<12 {
                var pointer = try unwrapPointer(try rig.pin.next())
                seen.insert(pointer.info.index)
                XCTAssertNil(try pointer.withLockedPayload { payloadProblem($0, payloadSizes: payloadSizes) })
            }
            XCTAssertEqual(seen, Set(0..<6), "\(layout): the new buffers were filled too")
            rig.pin.stop()
            rig.assertTornDown("\(layout) grown pool")
        }
    }

    /// addFrames with a count below one is a clear error, not a trap in CREATE_BUFS' arithmetic,
    /// and the stream goes on.
    func testAddingFewerThanOneFrameIsRefused() throws {
        let rig = try SimRig(.singlePlanar, width: 160, height: 120)
        try rig.pin.start(AllocatorSelection(frameCount: 4))
        for count in [0, -1, Int.min] {
            XCTAssertThrowsError(try rig.pin.addFrames(count)) { error in
                XCTAssertEqual((error as? CaptureError)?.kind, .invalidConfiguration)
                XCTAssertTrue((error as? CaptureError)?.message.contains("addFrames(\(count))") ?? false, "\(error)")
            }
        }
        XCTAssertEqual(rig.queue.bufferCount, 4)
        XCTAssertTrue(gotFrame(try rig.pin.next()))
        rig.pin.stop()
    }

    /// A driver that grants 0 USERPTR buffers: the allocator says so instead of streaming none.
    func testZeroUserPointerGrantIsAnError() throws {
        let inner = SimulatedV4L2Backend()
        inner.addDevice(path: capturePath, configuration: Layout.singlePlanar.deviceConfiguration())
        // A USERPTR REQBUFS is answered with count 0.
        let backend = InterceptingBackend(inner, name: "zero-grant") { request, argument, answer in
            if request == CV4L2_VIDIOC_REQBUFS, answer == nil {
                let buffers = argument.assumingMemoryBound(to: v4l2_requestbuffers.self)
                if buffers.pointee.memory == V4L2_MEMORY_USERPTR.rawValue { buffers.pointee.count = 0 }
            }
            return answer
        }
        let device = try VideoDevice(path: capturePath, backend: backend)
        let pin = try CapturePin(device: device, configuration: PinConfiguration(pixelFormat: .yuyv, width: 320, height: 180))
        XCTAssertThrowsError(try pin.start(AllocatorSelection(candidates: [UserPointerAllocator()]))) { error in
            XCTAssertEqual((error as? CaptureError)?.kind, .allocator, "\(error)")
            XCTAssertTrue("\(error)".contains("granted no userptr buffers"), "\(error)")
        }
        XCTAssertFalse(pin.isStreaming)
        XCTAssertNil(pin.allocator)
    }
}
