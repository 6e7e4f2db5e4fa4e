import CV4L2
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// Every ``SimulatedFault`` kind is observable, and the simulator's own state survives it.
final class FaultTests: XCTestCase {
    func testInterruptedCallsAreRetriedByVideoDevice() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        backend.resetCounters(path: videoPath)
        XCTAssertTrue(backend.injectFault(.interrupted(5), path: videoPath))
        XCTAssertEqual(try device.dequeueFrame().sequence, 0)
        XCTAssertEqual(backend.ioctlCount(path: videoPath, request: CV4L2_VIDIOC_DQBUF), 6, "five EINTRs, then the frame")
        XCTAssertEqual(backend.pendingFaults(path: videoPath), [])
    }

    func testInterruptedIsVisibleOnRawCallsAndPoll() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        backend.injectFault(.interrupted(2), path: videoPath)
        var input: Int32 = -1
        XCTAssertEqual(device.raw(CV4L2_VIDIOC_G_INPUT, &input), .interrupted)
        guard case .failure(let errno) = backend.poll(device.descriptor, events: Int16(POLLIN), timeoutMilliseconds: 0) else {
            return XCTFail("poll was not interrupted")
        }
        XCTAssertEqual(errno, .interrupted)
        XCTAssertNil(device.raw(CV4L2_VIDIOC_G_INPUT, &input))
        XCTAssertEqual(input, 0)
    }

    func testWouldBlockMakesDequeueReturnNil() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        backend.injectFault(.wouldBlock(3), path: videoPath)
        for _ in 0..<3 { XCTAssertNil(try device.dequeue(bufferType: .videoCapture, memory: .mmap)) }
        XCTAssertEqual(try device.dequeueFrame().sequence, 0)
    }

    func testOutOfRangeIndexIsReportedButTheBufferIsReallyDequeued() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming(count: 4)
        backend.injectFault(.outOfRangeIndex, path: videoPath)
        let bogus = try device.dequeueFrame()
        XCTAssertEqual(bogus.index, 4)
        let state = try XCTUnwrap(backend.queueState(path: videoPath))
        XCTAssertEqual(state.dequeuedIndexes, [0], "buffer 0 was the one dequeued")
        XCTAssertEqual(state.queuedIndexes, [1, 2, 3])
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.queue(bogus) }?.errno, .invalidArgument)
        try device.queue(try device.queryBuffer(index: 0, bufferType: .videoCapture, memory: .mmap))
        XCTAssertEqual(try device.dequeueFrame().index, 1)
    }

    func testIndexNotQueuedReportsABufferTheApplicationHolds() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming(count: 4)
        let held = try device.dequeueFrame()
        XCTAssertEqual(held.index, 0)
        backend.injectFault(.indexNotQueued, path: videoPath)
        let second = try device.dequeueFrame()
        XCTAssertEqual(second.index, 0, "the same index twice")
        XCTAssertEqual(second.sequence, 1)
        let state = try XCTUnwrap(backend.queueState(path: videoPath))
        XCTAssertEqual(state.dequeuedIndexes, [0, 1], "buffer 1 was really dequeued")
        try device.queue(second)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.queue(second) }?.errno, .invalidArgument)
    }

    func testIndexNotQueuedWaitsForABufferToReport() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming(count: 2)
        backend.injectFault(.indexNotQueued, path: videoPath)
        XCTAssertEqual(try device.dequeueFrame().index, 0, "no other buffer is held yet: the answer is honest")
        XCTAssertEqual(backend.pendingFaults(path: videoPath), [.indexNotQueued])
        XCTAssertEqual(try device.dequeueFrame().index, 0, "now buffer 0 is held, and reported again")
    }

    func testBytesUsedOverLength() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        backend.injectFault(.bytesUsedOverLength, path: videoPath)
        let frame = try device.dequeueFrame()
        XCTAssertEqual(frame.planes[0].bytesUsed, frame.planes[0].length + 1)
        try device.queue(frame)
        let next = try device.dequeueFrame()
        XCTAssertEqual(next.planes[0].bytesUsed, next.planes[0].length)
    }

    func testDataOffsetNotBelowBytesUsedOnMultiplanarDevicesOnly() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128))
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        backend.injectFault(.dataOffsetNotBelowBytesUsed, path: videoPath)
        let frame = try device.dequeueFrame()
        XCTAssertEqual(frame.planes[0].dataOffset, frame.planes[0].bytesUsed)
        XCTAssertEqual(try device.dequeueFrame().planes[0].dataOffset, 128)

        let single = makeBackend()
        let singleDevice = try VideoDevice(path: videoPath, backend: single)
        try singleDevice.startMMAPStreaming()
        single.injectFault(.dataOffsetNotBelowBytesUsed, path: videoPath)
        _ = try singleDevice.dequeueFrame()
        XCTAssertEqual(single.pendingFaults(path: videoPath), [.dataOffsetNotBelowBytesUsed], "no data_offset to corrupt")
    }

    func testErrorFlag() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        backend.injectFault(.errorFlag, path: videoPath)
        let bad = try device.dequeueFrame()
        XCTAssertTrue(bad.flags.contains([.error, .done]))
        let good = try device.dequeueFrame()
        XCTAssertFalse(good.flags.contains(.error))
        XCTAssertEqual([bad.sequence, good.sequence], [0, 1])
    }

    func testDropFramesSkipsSequenceNumbers() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        _ = try device.dequeueFrame()
        backend.injectFault(.dropFrames(3), path: videoPath)
        XCTAssertEqual(try device.dequeueFrame().sequence, 4)
        XCTAssertEqual(try device.dequeueFrame().sequence, 5)
    }

    func testDroppedFramesCarryThePatternOfTheirOwnSequence() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming(count: 2)
        let mappings = try device.mapAll(count: 2, bufferType: .videoCapture)
        defer { device.unmapAll(mappings) }
        backend.injectFault(.dropFrames(10), path: videoPath)
        let frame = try device.dequeueFrame()
        XCTAssertEqual(frame.sequence, 10)
        assertPattern(UnsafeRawBufferPointer(mappings[Int(frame.index)][0]), sequence: 10, plane: 0, count: Int(frame.planes[0].bytesUsed))
    }

    func testFatalErrorUntilStreamOff() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming(count: 3)
        let held = try device.dequeueFrame()
        backend.injectFault(.fatalError, path: videoPath)
        let error = expectError { () throws(V4L2Error) in try device.dequeue(bufferType: .videoCapture, memory: .mmap) }
        XCTAssertEqual(error?.errno, .ioError)
        XCTAssertEqual(try device.poll(timeoutMilliseconds: 0), .error)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.queue(held) }?.errno, .ioError)
        XCTAssertEqual(backend.queueState(path: videoPath)?.hasFatalError, true)
        try device.streamOff(.videoCapture)
        XCTAssertEqual(backend.queueState(path: videoPath)?.hasFatalError, false)
        for index in 0..<UInt32(3) { try device.queue(try device.queryBuffer(index: index, bufferType: .videoCapture, memory: .mmap)) }
        try device.streamOn(.videoCapture)
        XCTAssertEqual(try device.dequeueFrame().sequence, 0)
    }

    func testFatalErrorAppliesAtPollToo() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        backend.injectFault(.fatalError, path: videoPath)
        var input: Int32 = 0
        XCTAssertNil(device.raw(CV4L2_VIDIOC_G_INPUT, &input), "not a frame call: the fault waits")
        XCTAssertEqual(try device.poll(timeoutMilliseconds: 0), .error)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.dequeue(bufferType: .videoCapture, memory: .mmap) }?.errno, .ioError)
    }

    func testDisconnect() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        let buffer = try device.queryBuffer(index: 0, bufferType: .videoCapture, memory: .mmap)
        backend.injectFault(.disconnect, path: videoPath)
        let error = expectError { () throws(V4L2Error) in try device.dequeue(bufferType: .videoCapture, memory: .mmap) }
        XCTAssertEqual(error?.errno, .noSuchDevice)
        XCTAssertTrue(error?.hint?.contains("disconnected") ?? false)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.format(.videoCapture) }?.errno, .noSuchDevice)
        XCTAssertTrue(try device.poll(timeoutMilliseconds: 0).contains([.error, .hangUp]))
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.map(length: Int(buffer.planes[0].length), offset: buffer.planes[0].mapOffset) }?.errno,
                       .noSuchDevice)
        let reopen = expectError { () throws(V4L2Error) in try VideoDevice(path: videoPath, backend: backend) }
        XCTAssertEqual(reopen?.errno, .noSuchDevice)
        XCTAssertTrue(reopen?.hint?.contains("no driver answers") ?? false)
        XCTAssertEqual(backend.queueState(path: videoPath)?.isDisconnected, true)
    }

    func testFailNextFailsOnlyTheNextCallOfThatRequest() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        backend.injectFault(.failNext(request: CV4L2_VIDIOC_REQBUFS, errno: .noMemory), path: videoPath)
        backend.injectFault(.failNext(request: CV4L2_VIDIOC_STREAMON, errno: .ioError), path: videoPath)
        backend.injectFault(.failNext(request: CV4L2_VIDIOC_QBUF, errno: .invalidArgument), path: videoPath)
        XCTAssertEqual(backend.pendingFaults(path: videoPath).count, 3)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap) }?.errno,
                       .noMemory)
        XCTAssertEqual(backend.queueState(path: videoPath)?.bufferCount, 0, "a failed call has no effect")
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        let first = try device.queryBuffer(index: 0, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.queue(first) }?.errno, .invalidArgument)
        try device.queue(first)
        try device.queue(try device.queryBuffer(index: 1, bufferType: .videoCapture, memory: .mmap))
        let streamOn = expectError { () throws(V4L2Error) in try device.streamOn(.videoCapture) }
        XCTAssertEqual(streamOn?.errno, .ioError)
        XCTAssertEqual(streamOn?.operation, "VIDIOC_STREAMON")
        XCTAssertEqual(backend.queueState(path: videoPath)?.isStreaming, false)
        try device.streamOn(.videoCapture)
        XCTAssertEqual(backend.pendingFaults(path: videoPath), [])
    }

    func testFramePathFaultsWaitForTheirCall() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .manual))
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        backend.injectFault(.errorFlag, path: videoPath)
        backend.injectFault(.wouldBlock(1), path: videoPath)
        _ = try device.format(.videoCapture)
        XCTAssertEqual(backend.pendingFaults(path: videoPath), [.errorFlag, .wouldBlock(1)])
        backend.produceFrames(path: videoPath)
        XCTAssertEqual(backend.pendingFaults(path: videoPath), [.wouldBlock(1)])
        XCTAssertNil(try device.dequeue(bufferType: .videoCapture, memory: .mmap))
        XCTAssertTrue(try device.dequeueFrame().flags.contains(.error))
        backend.injectFault(.disconnect, path: videoPath)
        backend.clearFaults(path: videoPath)
        XCTAssertEqual(backend.pendingFaults(path: videoPath), [])
        XCTAssertFalse(backend.injectFault(.disconnect, path: "/dev/video9"))
        XCTAssertEqual(SimulatedFault.failNext(request: CV4L2_VIDIOC_QBUF, errno: .ioError).description, "failNext(VIDIOC_QBUF, EIO)")
    }
}
