import SystemPackage
import CV4L2
import Foundation
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// The videobuf2 queue rules: REQBUFS, QUERYBUF, mmap, QBUF, STREAMON, DQBUF, STREAMOFF, CREATE_BUFS.
final class StreamingTests: XCTestCase {
    func testMMAPCaptureCycleDeliversPatternFramesInSequence() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        let format = try device.format(.videoCapture)
        let granted = try device.requestBuffers(count: 4, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(granted.count, 4)
        XCTAssertTrue(granted.capabilities.contains([.supportsMMAP, .supportsUserPointer, .supportsDMABuf, .supportsOrphanedBuffers]))
        let mappings = try device.mapAll(count: 4, bufferType: .videoCapture)
        XCTAssertEqual(backend.liveMappingCount, 4)
        var offsets = Set<UInt32>()
        for index in 0..<UInt32(4) {
            let buffer = try device.queryBuffer(index: index, bufferType: .videoCapture, memory: .mmap)
            XCTAssertEqual(buffer.index, index)
            XCTAssertEqual(buffer.planes[0].length, format.planes[0].sizeImage)
            XCTAssertTrue(buffer.flags.contains(.mapped))
            XCTAssertFalse(buffer.flags.contains(.queued))
            offsets.insert(buffer.planes[0].mapOffset)
            try device.queue(buffer)
        }
        XCTAssertEqual(offsets.count, 4, "every buffer has its own mmap offset")
        XCTAssertEqual(backend.queueState(path: videoPath)?.queuedIndexes, [0, 1, 2, 3])
        try device.streamOn(.videoCapture)
        var lastTimestamp: Int64 = 0
        for frame in 0..<UInt32(10) {
            let buffer = try device.dequeueFrame()
            XCTAssertEqual(buffer.index, frame % 4, "buffers come back in queue order")
            XCTAssertEqual(buffer.sequence, frame)
            XCTAssertEqual(buffer.planes[0].bytesUsed, format.planes[0].sizeImage)
            XCTAssertEqual(buffer.field, 1)
            XCTAssertTrue(buffer.flags.contains([.done, .timestampMonotonic, .mapped]))
            XCTAssertFalse(buffer.flags.contains(.error))
            XCTAssertFalse(buffer.flags.contains(.queued))
            XCTAssertGreaterThan(buffer.timestampNanoseconds, lastTimestamp)
            lastTimestamp = buffer.timestampNanoseconds
            assertPattern(UnsafeRawBufferPointer(mappings[Int(buffer.index)][0]), sequence: frame, plane: 0,
                          count: Int(buffer.planes[0].bytesUsed))
            try device.queue(buffer)
        }
        try device.streamOff(.videoCapture)
        device.unmapAll(mappings)
        XCTAssertEqual(backend.liveMappingCount, 0)
        XCTAssertEqual(backend.queueState(path: videoPath)?.framesProduced, 10)
    }

    func testMultiplanarTwoPlaneCaptureWithDataOffset() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128))
        let device = try VideoDevice(path: videoPath, backend: backend)
        let format = try device.setFormat(ImageFormat(bufferType: .videoCaptureMultiplanar, width: 640, height: 360, pixelFormat: .nv12m))
        try device.requestBuffers(count: 3, bufferType: .videoCaptureMultiplanar, memory: .mmap)
        let mappings = try device.mapAll(count: 3, bufferType: .videoCaptureMultiplanar)
        XCTAssertEqual(mappings.map(\.count), [2, 2, 2])
        for index in 0..<UInt32(3) {
            let buffer = try device.queryBuffer(index: index, bufferType: .videoCaptureMultiplanar, memory: .mmap)
            XCTAssertEqual(buffer.planeCount, 2)
            XCTAssertEqual(buffer.planes[0].length, 640 * 360 + 128)
            XCTAssertEqual(buffer.planes[1].length, 640 * 180)
            XCTAssertNotEqual(buffer.planes[0].mapOffset, buffer.planes[1].mapOffset)
            try device.queue(buffer)
        }
        try device.streamOn(.videoCaptureMultiplanar)
        for frame in 0..<UInt32(4) {
            let buffer = try device.dequeueFrame()
            XCTAssertEqual(buffer.planeCount, 2)
            XCTAssertEqual(buffer.sequence, frame)
            XCTAssertEqual(buffer.planes[0].dataOffset, 128)
            XCTAssertEqual(buffer.planes[0].bytesUsed, format.planes[0].sizeImage, "bytesused includes data_offset")
            XCTAssertEqual(buffer.planes[1].dataOffset, 0)
            XCTAssertEqual(buffer.planes[1].bytesUsed, format.planes[1].sizeImage)
            for plane in 0..<2 {
                assertPattern(UnsafeRawBufferPointer(mappings[Int(buffer.index)][plane]), sequence: frame, plane: plane,
                              count: Int(buffer.planes[plane].bytesUsed))
            }
            try device.queue(buffer)
        }
        device.unmapAll(mappings)
    }

    func testRequestBuffersRaisesToTheMinimumAndCapsAtTheMaximum() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend(SimulatedDeviceConfiguration(minimumBuffers: 3)))
        XCTAssertEqual(try device.requestBuffers(count: 1, bufferType: .videoCapture, memory: .mmap).count, 3)
        XCTAssertEqual(try device.requestBuffers(count: 100, bufferType: .videoCapture, memory: .mmap).count, 32)
        XCTAssertEqual(try device.requestBuffers(count: 0, bufferType: .videoCapture, memory: .mmap).count, 0)
    }

    func testRequestBuffersZeroFreesAndReportsCapabilities() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(memoryKinds: [.mmap, .dmabuf]))
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.requestBuffers(count: 4, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(backend.queueState(path: videoPath)?.bufferCount, 4)
        XCTAssertEqual(backend.queueState(path: videoPath)?.owner, device.descriptor)
        let freed = try device.requestBuffers(count: 0, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(freed.capabilities.memoryKinds, [.mmap, .dmabuf])
        XCTAssertEqual(backend.queueState(path: videoPath)?.bufferCount, 0)
        XCTAssertNil(backend.queueState(path: videoPath)?.owner)
        XCTAssertEqual(backend.internalMappingCount, 0)
    }

    func testRequestBuffersOfAnUnsupportedMemoryKindOrTypeIsEINVAL() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend(SimulatedDeviceConfiguration(memoryKinds: [.mmap])))
        let error = expectError { () throws(V4L2Error) in
            try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .userPointer)
        }
        XCTAssertEqual(error?.errno, .invalidArgument)
        XCTAssertEqual(error?.operation, "VIDIOC_REQBUFS")
        XCTAssertTrue(error?.hint?.contains("may not support userptr") ?? false, error?.hint ?? "")
        XCTAssertEqual(expectError { () throws(V4L2Error) in
            try device.requestBuffers(count: 2, bufferType: .videoOutput, memory: .mmap)
        }?.errno, .invalidArgument)
        var request = v4l2_requestbuffers()
        request.count = 1
        request.type = 1
        request.memory = 3 // V4L2_MEMORY_OVERLAY
        XCTAssertEqual(device.raw(CV4L2_VIDIOC_REQBUFS, &request), .invalidArgument)
        XCTAssertEqual(request.capabilities & 0x7, 0x1, "capabilities are filled in even on failure")
    }

    func testQueryBufferWithABadIndexIsEINVAL() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        let error = expectError { () throws(V4L2Error) in try device.queryBuffer(index: 2, bufferType: .videoCapture, memory: .mmap) }
        XCTAssertEqual(error?.errno, .invalidArgument)
        XCTAssertEqual(error?.operation, "VIDIOC_QUERYBUF")
    }

    func testMultiplanarCallsNeedAPlanesArray() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend(SimulatedDeviceConfiguration(multiplanar: true)))
        try device.requestBuffers(count: 2, bufferType: .videoCaptureMultiplanar, memory: .mmap)
        var raw = v4l2_buffer()
        raw.type = BufferType.videoCaptureMultiplanar.rawValue
        raw.memory = 1
        raw.length = 1
        XCTAssertEqual(device.raw(CV4L2_VIDIOC_QUERYBUF, &raw), .invalidArgument, "no planes array")
    }

    func testDequeueWithoutAFrameGivesNil() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .manual))
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        XCTAssertNil(try device.dequeue(bufferType: .videoCapture, memory: .mmap))
        XCTAssertEqual(backend.produceFrames(path: videoPath, count: 2), 2)
        XCTAssertEqual(try device.dequeue(bufferType: .videoCapture, memory: .mmap)?.sequence, 0)
        XCTAssertEqual(try device.dequeue(bufferType: .videoCapture, memory: .mmap)?.sequence, 1)
        XCTAssertNil(try device.dequeue(bufferType: .videoCapture, memory: .mmap))
        XCTAssertEqual(backend.produceFrames(path: videoPath, count: 5), 2, "only two buffers are still queued")
    }

    func testQueueingABufferTwiceIsEINVAL() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        let buffer = try device.queryBuffer(index: 1, bufferType: .videoCapture, memory: .mmap)
        try device.queue(buffer)
        let error = expectError { () throws(V4L2Error) in try device.queue(buffer) }
        XCTAssertEqual(error?.errno, .invalidArgument)
        XCTAssertEqual(error?.operation, "VIDIOC_QBUF")
        XCTAssertEqual(backend.queueState(path: videoPath)?.queuedIndexes, [1])
        XCTAssertTrue(try device.queryBuffer(index: 1, bufferType: .videoCapture, memory: .mmap).flags.contains(.queued))
    }

    func testQueueingABadIndexOrTheWrongMemoryKindIsEINVAL() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(expectError { () throws(V4L2Error) in
            try device.queue(BufferDescriptor(index: 2, bufferType: .videoCapture, memory: .mmap))
        }?.errno, .invalidArgument)
        XCTAssertEqual(expectError { () throws(V4L2Error) in
            try device.queue(BufferDescriptor(index: 0, bufferType: .videoCapture, memory: .userPointer))
        }?.errno, .invalidArgument)
        XCTAssertEqual(expectError { () throws(V4L2Error) in
            try device.queue(BufferDescriptor(index: 0, bufferType: .videoOutput, memory: .mmap))
        }?.errno, .invalidArgument)
    }

    func testDequeueWhenNotStreamingIsEINVAL() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        try device.queue(try device.queryBuffer(index: 0, bufferType: .videoCapture, memory: .mmap))
        let error = expectError { () throws(V4L2Error) in try device.dequeue(bufferType: .videoCapture, memory: .mmap) }
        XCTAssertEqual(error?.errno, .invalidArgument)
        XCTAssertEqual(error?.operation, "VIDIOC_DQBUF")
    }

    func testStreamOffReturnsEveryBufferAndDropsFramesInFlight() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .manual))
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming(count: 4)
        XCTAssertEqual(backend.produceFrames(path: videoPath, count: 2), 2)
        let during = try XCTUnwrap(backend.queueState(path: videoPath))
        XCTAssertEqual([during.dequeuedCount, during.queuedCount, during.filledCount], [0, 2, 2])
        XCTAssertEqual(during.filledIndexes, [0, 1])
        try device.streamOff(.videoCapture)
        let after = try XCTUnwrap(backend.queueState(path: videoPath))
        XCTAssertEqual([after.dequeuedCount, after.queuedCount, after.filledCount], [4, 0, 0])
        XCTAssertFalse(after.isStreaming)
        XCTAssertFalse(try device.queryBuffer(index: 0, bufferType: .videoCapture, memory: .mmap).flags.contains(.done))
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.dequeue(bufferType: .videoCapture, memory: .mmap) }?.errno,
                       .invalidArgument)
        // Every buffer can be queued again, and sequence numbers restart.
        for index in 0..<UInt32(4) { try device.queue(try device.queryBuffer(index: index, bufferType: .videoCapture, memory: .mmap)) }
        try device.streamOn(.videoCapture)
        backend.produceFrames(path: videoPath)
        XCTAssertEqual(try device.dequeueFrame().sequence, 0)
    }

    func testRequestBuffersWhileStreamingIsEBUSY() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.startMMAPStreaming()
        let error = expectError { () throws(V4L2Error) in try device.requestBuffers(count: 0, bufferType: .videoCapture, memory: .mmap) }
        XCTAssertEqual(error?.errno, .resourceBusy)
        XCTAssertTrue(error?.hint?.contains("in use") ?? false)
        try device.streamOff(.videoCapture)
        try device.requestBuffers(count: 0, bufferType: .videoCapture, memory: .mmap)
    }

    func testSetFormatWhileBuffersAreAllocatedIsEBUSY() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        let wanted = ImageFormat(bufferType: .videoCapture, width: 1280, height: 720, pixelFormat: .yuyv)
        let error = expectError { () throws(V4L2Error) in try device.setFormat(wanted) }
        XCTAssertEqual(error?.errno, .resourceBusy)
        XCTAssertEqual(error?.operation, "VIDIOC_S_FMT")
        XCTAssertEqual(try device.tryFormat(wanted).width, 1280, "TRY_FMT still works")
        XCTAssertEqual(try device.format(.videoCapture).width, 640)
        try device.requestBuffers(count: 0, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(try device.setFormat(wanted).width, 1280)
    }

    func testCreateBuffersAddsBuffersAfterTheExistingOnes() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        let format = try device.format(.videoCapture)
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        let created = try device.createBuffers(count: 3, memory: .mmap, format: format)
        XCTAssertEqual(created.index, 2)
        XCTAssertEqual(created.count, 3)
        XCTAssertTrue(created.capabilities.contains(.supportsMMAP))
        XCTAssertEqual(backend.queueState(path: videoPath)?.bufferCount, 5)
        XCTAssertEqual(try device.queryBuffer(index: 4, bufferType: .videoCapture, memory: .mmap).planes[0].length,
                       format.planes[0].sizeImage)
        var bigger = format
        bigger.planes[0].sizeImage += 4096
        let big = try device.createBuffers(count: 1, memory: .mmap, format: bigger)
        XCTAssertEqual(big.index, 5)
        XCTAssertEqual(try device.queryBuffer(index: 5, bufferType: .videoCapture, memory: .mmap).planes[0].length,
                       bigger.planes[0].sizeImage)
        var smaller = format
        smaller.planes[0].sizeImage -= 1
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.createBuffers(count: 1, memory: .mmap, format: smaller) }?.errno,
                       .invalidArgument)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.createBuffers(count: 1, memory: .userPointer, format: format) }?.errno,
                       .invalidArgument, "the memory kind must match the existing buffers")
        let probe = try device.createBuffers(count: 0, memory: .mmap, format: format)
        XCTAssertEqual([probe.index, probe.count], [6, 0], "count 0 only reports the next index")
        XCTAssertEqual(backend.queueState(path: videoPath)?.bufferCount, 6)
    }

    func testCreateBuffersStopsAtTheMaximum() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend(SimulatedDeviceConfiguration(maximumBuffers: 4)))
        let format = try device.format(.videoCapture)
        XCTAssertEqual(try device.createBuffers(count: 10, memory: .mmap, format: format).count, 4)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.createBuffers(count: 1, memory: .mmap, format: format) }?.errno,
                       Errno(rawValue: ENOBUFS))
    }

    func testStreamOnNeedsBuffersAndDefersFramesUntilTheMinimumIsQueued() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(minimumBuffers: 3))
        let device = try VideoDevice(path: videoPath, backend: backend)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.streamOn(.videoCapture) }?.errno, .invalidArgument)
        let format = try device.format(.videoCapture)
        _ = try device.createBuffers(count: 2, memory: .mmap, format: format)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.streamOn(.videoCapture) }?.errno, .invalidArgument,
                       "fewer buffers than the minimum")
        _ = try device.createBuffers(count: 2, memory: .mmap, format: format)
        try device.queue(try device.queryBuffer(index: 0, bufferType: .videoCapture, memory: .mmap))
        try device.streamOn(.videoCapture)
        try device.streamOn(.videoCapture) // a second STREAMON is fine
        XCTAssertEqual(backend.queueState(path: videoPath)?.isProducing, false)
        XCTAssertNil(try device.dequeue(bufferType: .videoCapture, memory: .mmap), "not started with one buffer queued")
        XCTAssertEqual(try device.poll(timeoutMilliseconds: 0), [])
        try device.queue(try device.queryBuffer(index: 1, bufferType: .videoCapture, memory: .mmap))
        XCTAssertNil(try device.dequeue(bufferType: .videoCapture, memory: .mmap))
        try device.queue(try device.queryBuffer(index: 2, bufferType: .videoCapture, memory: .mmap))
        XCTAssertEqual(backend.queueState(path: videoPath)?.isProducing, true)
        XCTAssertEqual(try device.dequeueFrame().index, 0)
    }

    func testStreamOnWithTheWrongTypeIsEINVAL() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.streamOn(.videoCaptureMultiplanar) }?.errno, .invalidArgument)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.streamOff(.videoOutput) }?.errno, .invalidArgument)
    }

    func testOnlyTheOwningDescriptorMayUseTheQueueAndClosingItFreesTheBuffers() throws {
        let backend = makeBackend()
        var owner: VideoDevice? = try VideoDevice(path: videoPath, backend: backend)
        let other = try VideoDevice(path: videoPath, backend: backend)
        try owner!.startMMAPStreaming()
        XCTAssertEqual(expectError { () throws(V4L2Error) in try other.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap) }?.errno,
                       .resourceBusy)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try other.dequeue(bufferType: .videoCapture, memory: .mmap) }?.errno,
                       .resourceBusy)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try other.streamOff(.videoCapture) }?.errno, .resourceBusy)
        XCTAssertEqual(try other.queryBuffer(index: 0, bufferType: .videoCapture, memory: .mmap).index, 0, "anyone may QUERYBUF")
        XCTAssertEqual(expectError { () throws(V4L2Error) in
            try other.setFormat(ImageFormat(bufferType: .videoCapture, width: 320, height: 180, pixelFormat: .yuyv))
        }?.errno, .resourceBusy)
        owner = nil // closes the descriptor
        let state = try XCTUnwrap(backend.queueState(path: videoPath))
        XCTAssertEqual(state.bufferCount, 0)
        XCTAssertFalse(state.isStreaming)
        XCTAssertNil(state.owner)
        XCTAssertEqual(backend.internalMappingCount, 0)
        XCTAssertEqual(try other.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap).count, 2)
    }

    func testPollReportsErrorWhenNotStreamingAndInputWhenAFrameIsReady() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .manual))
        let device = try VideoDevice(path: videoPath, backend: backend)
        XCTAssertEqual(try device.poll(timeoutMilliseconds: 0), .error)
        try device.startMMAPStreaming()
        XCTAssertEqual(try device.poll(timeoutMilliseconds: 0), [])
        let started = Date()
        XCTAssertEqual(try device.poll(timeoutMilliseconds: 30), [])
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(started), 0.025, "poll waits for its timeout")
        backend.produceFrames(path: videoPath)
        XCTAssertEqual(try device.poll(events: [.input, .readNormal], timeoutMilliseconds: 0), [.input, .readNormal])
        XCTAssertEqual(try device.poll(events: [.input], timeoutMilliseconds: 0), [.input], "only the events asked for, and errors")
        XCTAssertEqual(backend.pollCount(path: videoPath), 5)
    }

    func testPollWakesUpWhenAnotherThreadProducesAFrame() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .manual))
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming()
        let producer = Thread {
            usleep(20_000)
            backend.produceFrames(path: videoPath)
        }
        producer.start()
        let started = Date()
        XCTAssertEqual(try device.poll(timeoutMilliseconds: 5_000), .input)
        XCTAssertLessThan(Date().timeIntervalSince(started), 2.0)
        XCTAssertEqual(try device.dequeueFrame().sequence, 0)
    }

    func testPollProducesOnDemand() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming(count: 2)
        XCTAssertEqual(try device.poll(timeoutMilliseconds: 0), .input)
        XCTAssertEqual(backend.queueState(path: videoPath)?.filledIndexes, [0])
        _ = try device.dequeueFrame()
        _ = try device.dequeueFrame()
        XCTAssertEqual(try device.poll(timeoutMilliseconds: 0), [], "nothing queued, nothing to produce")
    }

    func testDequeueProducesOnDemandFromTheOldestQueuedBuffer() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.requestBuffers(count: 4, bufferType: .videoCapture, memory: .mmap)
        for index: UInt32 in [2, 0, 3, 1] {
            try device.queue(try device.queryBuffer(index: index, bufferType: .videoCapture, memory: .mmap))
        }
        try device.streamOn(.videoCapture)
        XCTAssertEqual(try (0..<4).map { _ in try device.dequeueFrame().index }, [2, 0, 3, 1])
        XCTAssertNil(try device.dequeue(bufferType: .videoCapture, memory: .mmap))
        XCTAssertEqual(backend.queueState(path: videoPath)?.dequeuedIndexes, [0, 1, 2, 3])
    }

    func testMMAPMappingRulesOfTheSimulator() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        let buffer = try device.queryBuffer(index: 1, bufferType: .videoCapture, memory: .mmap)
        let length = Int(buffer.planes[0].length)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.map(length: length + 8192, offset: buffer.planes[0].mapOffset) }?.errno,
                       .invalidArgument, "longer than the buffer")
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.map(length: length, offset: 0x7fff_f000) }?.errno,
                       .invalidArgument, "no buffer at that offset")
        guard case .failure(let errno) = backend.mmap(device.descriptor, length: length, protection: PROT_WRITE,
                                                    offset: Int64(buffer.planes[0].mapOffset)) else { return XCTFail("mapped write-only") }
        XCTAssertEqual(errno, .invalidArgument, "a capture buffer must be mapped readable")
        XCTAssertEqual(backend.liveMappingCount, 0)
    }

    func testOrphanedBuffersStayMappedAfterRequestBuffersZero() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming(count: 2)
        let mappings = try device.mapAll(count: 2, bufferType: .videoCapture)
        let frame = try device.dequeueFrame()
        try device.streamOff(.videoCapture)
        try device.requestBuffers(count: 0, bufferType: .videoCapture, memory: .mmap)
        XCTAssertEqual(backend.liveMappingCount, 2)
        assertPattern(UnsafeRawBufferPointer(mappings[Int(frame.index)][0]), sequence: 0, plane: 0, count: Int(frame.planes[0].bytesUsed))
        device.unmapAll(mappings)
        XCTAssertEqual(backend.liveMappingCount, 0)
    }

    func testOutputOnlyDeviceQueueCompletesBuffersWithoutWritingThem() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(canCapture: false))
        let device = try VideoDevice(path: videoPath, backend: backend)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap) }?.errno,
                       .invalidArgument, "no capture queue")
        try device.requestBuffers(count: 2, bufferType: .videoOutput, memory: .mmap)
        var buffer = try device.queryBuffer(index: 0, bufferType: .videoOutput, memory: .mmap)
        let mapping = try device.map(length: Int(buffer.planes[0].length), offset: buffer.planes[0].mapOffset)
        defer { device.unmap(mapping) }
        mapping.storeBytes(of: 0x5A, toByteOffset: 0, as: UInt8.self)
        buffer.planes[0].bytesUsed = 100
        try device.queue(buffer)
        try device.queue(try device.queryBuffer(index: 1, bufferType: .videoOutput, memory: .mmap))
        try device.streamOn(.videoOutput)
        XCTAssertEqual(try device.poll(events: [.output], timeoutMilliseconds: 0), .output)
        let done = try XCTUnwrap(try device.dequeue(bufferType: .videoOutput, memory: .mmap))
        XCTAssertEqual(done.index, 0)
        XCTAssertEqual(done.planes[0].bytesUsed, 100, "an output buffer keeps the bytesused the application gave")
        XCTAssertEqual(mapping.load(fromByteOffset: 0, as: UInt8.self), 0x5A, "nothing is written into an output buffer")
    }

    func testCaptureOnOneThreadWhileAnotherProducesFrames() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .manual))
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.startMMAPStreaming(count: 4)
        let frames = 200
        let producer = Thread {
            var produced = 0
            while produced < frames {
                produced += backend.produceFrames(path: videoPath, count: 1)
                _ = backend.queueState(path: videoPath)
                if produced % 7 == 0 { usleep(100) }
            }
        }
        producer.start()
        var sequences: [UInt32] = []
        let deadline = Date().addingTimeInterval(20)
        while sequences.count < frames && Date() < deadline {
            guard try device.poll(timeoutMilliseconds: 100).contains(.input) else { continue }
            guard let buffer = try device.dequeue(bufferType: .videoCapture, memory: .mmap) else { continue }
            sequences.append(buffer.sequence)
            try device.queue(buffer)
        }
        XCTAssertEqual(sequences, Array(0..<UInt32(frames)))
    }
}

final class MisreportedTimestampTests: XCTestCase {
    /// A driver's timestamp that overflows nanoseconds must not trap the process: the
    /// conversion wraps, and the frame is still dequeued.
    func testAnOverflowingTimestampDoesNotTrap() throws {
        // Every DQBUF answer carries an absurd timestamp.
        let backend = InterceptingBackend(makeBackend(), name: "absurd-timestamp") { request, argument, answer in
            if answer == nil && request == CV4L2_VIDIOC_DQBUF {
                let buffer = argument.assumingMemoryBound(to: v4l2_buffer.self)
                buffer.pointee.timestamp.tv_sec = Int.max
                buffer.pointee.timestamp.tv_usec = Int.max
            }
            return answer
        }
        let device = try VideoDevice(path: videoPath, backend: backend)
        _ = try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        _ = try device.mapAll(count: 2, bufferType: .videoCapture)
        for index in 0..<UInt32(2) {
            try device.queue(try device.queryBuffer(index: index, bufferType: .videoCapture, memory: .mmap))
        }
        try device.streamOn(.videoCapture)
        let buffer = try device.dequeueFrame()
        XCTAssertEqual(buffer.sequence, 0)
        XCTAssertEqual(buffer.timestampNanoseconds, Int64.max &* 1_000_000_000 &+ Int64.max &* 1_000)
        try device.streamOff(.videoCapture)
    }
}
