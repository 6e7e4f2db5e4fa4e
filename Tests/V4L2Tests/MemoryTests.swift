import CV4L2
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// EXPBUF, USERPTR and DMABUF capture, and that nothing leaks.
final class MemoryTests: XCTestCase {
    func testExportedBufferIsANewDescriptorThatMapsToTheFrameBytes() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        let buffer = try device.queryBuffer(index: 0, bufferType: .videoCapture, memory: .mmap)
        let exported = try device.exportBuffer(index: 0, bufferType: .videoCapture)
        defer { close(exported) }
        XCTAssertGreaterThanOrEqual(exported, 0)
        XCTAssertNotEqual(exported, device.descriptor)
        XCTAssertNotEqual(fcntl(exported, F_GETFD) & FD_CLOEXEC, 0, "exported with O_CLOEXEC")
        var info = stat()
        XCTAssertEqual(fstat(exported, &info), 0)
        XCTAssertGreaterThanOrEqual(Int(info.st_size), Int(buffer.planes[0].length), "the dmabuf is as large as the plane")
        // Mapped through the backend, which hands a descriptor it does not own to the real mmap.
        let length = Int(buffer.planes[0].length)
        guard case .success(let address) = backend.mmap(exported, length: length, protection: PROT_READ, offset: 0) else {
            return XCTFail("mmap of the exported descriptor failed")
        }
        XCTAssertEqual(backend.liveMappingCount, 0, "not a mapping of a simulated device")
        try device.queue(buffer)
        try device.queue(try device.queryBuffer(index: 1, bufferType: .videoCapture, memory: .mmap))
        try device.streamOn(.videoCapture)
        let frame = try device.dequeueFrame()
        XCTAssertEqual(frame.index, 0)
        assertPattern(UnsafeRawBufferPointer(start: address, count: length), sequence: 0, plane: 0, count: Int(frame.planes[0].bytesUsed))
        XCTAssertNil(backend.munmap(address, length: length))
    }

    func testExportRules() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: true))
        let device = try VideoDevice(path: videoPath, backend: backend)
        try device.setFormat(ImageFormat(bufferType: .videoCaptureMultiplanar, width: 640, height: 360, pixelFormat: .nv12m))
        try device.requestBuffers(count: 2, bufferType: .videoCaptureMultiplanar, memory: .mmap)
        let plane1 = try device.exportBuffer(index: 1, plane: 1, bufferType: .videoCaptureMultiplanar)
        close(plane1)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.exportBuffer(index: 1, plane: 2, bufferType: .videoCaptureMultiplanar) }?.errno,
                       .invalidArgument, "NM12 has two planes")
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.exportBuffer(index: 2, bufferType: .videoCaptureMultiplanar) }?.errno,
                       .invalidArgument)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.exportBuffer(index: 0, bufferType: .videoCapture) }?.errno,
                       .invalidArgument)
        // A read-only export cannot be mapped for writing.
        var export = v4l2_exportbuffer()
        export.type = BufferType.videoCaptureMultiplanar.rawValue
        export.flags = UInt32(O_RDONLY | O_CLOEXEC)
        XCTAssertNil(device.raw(CV4L2_VIDIOC_EXPBUF, &export))
        defer { close(export.fd) }
        XCTAssertNil(mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, export.fd, 0).flatMap { $0 == MAP_FAILED ? nil : $0 })
        export.flags = 0x4000_0000
        XCTAssertEqual(device.raw(CV4L2_VIDIOC_EXPBUF, &export), .invalidArgument, "unknown flags")
        try device.requestBuffers(count: 2, bufferType: .videoCaptureMultiplanar, memory: .userPointer)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.exportBuffer(index: 0, bufferType: .videoCaptureMultiplanar) }?.errno,
                       .invalidArgument, "only MMAP buffers can be exported")
    }

    func testUserPointerCaptureWritesIntoTheCallersMemory() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        let size = Int(try device.format(.videoCapture).planes[0].sizeImage)
        let granted = try device.requestBuffers(count: 3, bufferType: .videoCapture, memory: .userPointer)
        XCTAssertEqual(granted.count, 3)
        var memories: [UnsafeMutableRawBufferPointer] = []
        defer { memories.forEach { $0.deallocate() } }
        for index in 0..<UInt32(3) {
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
            memory.initializeMemory(as: UInt8.self, repeating: 0)
            memories.append(memory)
            var buffer = BufferDescriptor(index: index, bufferType: .videoCapture, memory: .userPointer)
            buffer.planes[0].userPointer = UInt(bitPattern: memory.baseAddress)
            buffer.planes[0].length = UInt32(size)
            try device.queue(buffer)
        }
        try device.streamOn(.videoCapture)
        for sequence in 0..<UInt32(6) {
            let frame = try device.dequeueFrame(memory: .userPointer)
            XCTAssertEqual(frame.sequence, sequence)
            XCTAssertEqual(frame.planes[0].userPointer, UInt(bitPattern: memories[Int(frame.index)].baseAddress))
            XCTAssertEqual(frame.planes[0].bytesUsed, UInt32(size))
            assertPattern(UnsafeRawBufferPointer(memories[Int(frame.index)]), sequence: sequence, plane: 0, count: size)
            try device.queue(frame)
        }
        try device.streamOff(.videoCapture)
        XCTAssertEqual(backend.internalMappingCount, 0, "USERPTR needs no mapping of its own")
    }

    func testUserPointerQueueRules() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let size = Int(try device.format(.videoCapture).planes[0].sizeImage)
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .userPointer)
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        defer { memory.deallocate() }
        var short = BufferDescriptor(index: 0, bufferType: .videoCapture, memory: .userPointer)
        short.planes[0].userPointer = UInt(bitPattern: memory.baseAddress)
        short.planes[0].length = UInt32(size - 1)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.queue(short) }?.errno, .invalidArgument, "shorter than sizeimage")
        var null = BufferDescriptor(index: 0, bufferType: .videoCapture, memory: .userPointer)
        null.planes[0].length = UInt32(size)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.queue(null) }?.errno, .badAddress,
                       "a null pointer cannot be pinned (EFAULT, as get_user_pages gives)")
    }

    func testDMABufCaptureFromAnotherDevicesExportedBuffers() throws {
        let backend = SimulatedV4L2Backend()
        backend.addDevice(path: "/dev/video0", configuration: SimulatedDeviceConfiguration())
        backend.addDevice(path: "/dev/video1", configuration: SimulatedDeviceConfiguration())
        let exporter = try VideoDevice(path: "/dev/video0", backend: backend)
        let capture = try VideoDevice(path: "/dev/video1", backend: backend)
        let size = Int(try capture.format(.videoCapture).planes[0].sizeImage)
        try exporter.requestBuffers(count: 3, bufferType: .videoCapture, memory: .mmap)
        var fds: [Int32] = []
        var views: [UnsafeMutableRawPointer] = []
        defer {
            for view in views { munmap(view, size) }
            for fd in fds { close(fd) }
        }
        for index in 0..<UInt32(3) {
            let fd = try exporter.exportBuffer(index: index, bufferType: .videoCapture)
            fds.append(fd)
            guard case .success(let view) = backend.mmap(fd, length: size, protection: PROT_READ, offset: 0) else {
                return XCTFail("mmap of dmabuf \(fd) failed")
            }
            views.append(view)
        }
        XCTAssertEqual(try capture.requestBuffers(count: 3, bufferType: .videoCapture, memory: .dmabuf).count, 3)
        for (index, fd) in fds.enumerated() {
            var buffer = BufferDescriptor(index: UInt32(index), bufferType: .videoCapture, memory: .dmabuf)
            buffer.planes[0].fd = fd
            buffer.planes[0].length = 0 // the dmabuf's size
            try capture.queue(buffer)
        }
        XCTAssertEqual(backend.queueState(path: "/dev/video1")?.queuedCount, 3)
        try capture.streamOn(.videoCapture)
        for sequence in 0..<UInt32(7) {
            let frame = try capture.dequeueFrame(memory: .dmabuf)
            XCTAssertEqual(frame.sequence, sequence)
            XCTAssertEqual(frame.planes[0].fd, fds[Int(frame.index)])
            XCTAssertGreaterThanOrEqual(Int(frame.planes[0].length), size)
            XCTAssertEqual(frame.planes[0].bytesUsed, UInt32(size))
            assertPattern(UnsafeRawBufferPointer(start: views[Int(frame.index)], count: size), sequence: sequence, plane: 0, count: size)
            try capture.queue(frame)
        }
        XCTAssertEqual(backend.internalMappingCount, 3 + 3, "the exporter's own plane mappings and one per attached dmabuf")
        try capture.streamOff(.videoCapture)
        try capture.requestBuffers(count: 0, bufferType: .videoCapture, memory: .dmabuf)
        XCTAssertEqual(backend.internalMappingCount, 3, "freeing the importer's queue unmaps the dmabufs")
    }

    func testDMABufQueueRules() throws {
        let backend = SimulatedV4L2Backend()
        backend.addDevice(path: "/dev/video0", configuration: SimulatedDeviceConfiguration(initialWidth: 320, initialHeight: 180))
        backend.addDevice(path: "/dev/video1", configuration: SimulatedDeviceConfiguration())
        let small = try VideoDevice(path: "/dev/video0", backend: backend)
        let capture = try VideoDevice(path: "/dev/video1", backend: backend)
        try small.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        let tooSmall = try small.exportBuffer(index: 0, bufferType: .videoCapture)
        defer { close(tooSmall) }
        try capture.requestBuffers(count: 2, bufferType: .videoCapture, memory: .dmabuf)
        var buffer = BufferDescriptor(index: 0, bufferType: .videoCapture, memory: .dmabuf)
        buffer.planes[0].fd = tooSmall
        XCTAssertEqual(expectError { () throws(V4L2Error) in try capture.queue(buffer) }?.errno, .invalidArgument,
                       "a dmabuf smaller than sizeimage")
        buffer.planes[0].fd = -1
        XCTAssertEqual(expectError { () throws(V4L2Error) in try capture.queue(buffer) }?.errno, .invalidArgument, "a bad descriptor")
        buffer.planes[0].fd = capture.descriptor
        XCTAssertEqual(expectError { () throws(V4L2Error) in try capture.queue(buffer) }?.errno, .invalidArgument, "not a dmabuf")
        XCTAssertEqual(backend.queueState(path: "/dev/video1")?.queuedCount, 0)
    }

    func testNothingLeaksAfterAFullSessionIsClosed() throws {
        let before = processDescriptorCount()
        do {
            let backend = SimulatedV4L2Backend()
            backend.addDevice(path: "/dev/video0", configuration: SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128))
            backend.addDevice(path: "/dev/video1", configuration: SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128))
            do {
                let device = try VideoDevice(path: "/dev/video0", backend: backend)
                try device.setFormat(ImageFormat(bufferType: .videoCaptureMultiplanar, width: 640, height: 360, pixelFormat: .nv12m))
                try device.startMMAPStreaming(count: 4)
                let mappings = try device.mapAll(count: 4, bufferType: .videoCaptureMultiplanar)
                let exported = try device.exportBuffer(index: 2, plane: 1, bufferType: .videoCaptureMultiplanar)
                for _ in 0..<8 { try device.queue(try device.dequeueFrame()) }
                let other = try VideoDevice(path: "/dev/video1", backend: backend)
                try other.requestBuffers(count: 2, bufferType: .videoCaptureMultiplanar, memory: .mmap)
                XCTAssertGreaterThan(processDescriptorCount(), before)
                XCTAssertEqual(backend.openDescriptorCount, 2)
                XCTAssertEqual(backend.liveMappingCount, 8)
                device.unmapAll(mappings)
                close(exported)
            }
            XCTAssertEqual(backend.openDescriptorCount, 0)
            XCTAssertEqual(backend.liveMappingCount, 0)
            XCTAssertEqual(backend.internalMappingCount, 0)
            XCTAssertEqual(backend.queueState(path: "/dev/video0")?.bufferCount, 0)
            XCTAssertEqual(backend.queueState(path: "/dev/video1")?.bufferCount, 0)
        }
        XCTAssertEqual(processDescriptorCount(), before, "every memfd and placeholder descriptor is closed")
    }

    func testDroppingTheBackendClosesWhatIsStillOpen() throws {
        let before = processDescriptorCount()
        var backend: SimulatedV4L2Backend? = makeBackend()
        guard case .success(let fd) = backend!.open(path: videoPath, flags: O_RDWR) else { return XCTFail("open failed") }
        var request = v4l2_requestbuffers()
        request.count = 4
        request.type = 1
        request.memory = 1
        XCTAssertNil(withUnsafeMutablePointer(to: &request) { backend!.ioctl(fd, request: CV4L2_VIDIOC_REQBUFS, argument: $0) })
        XCTAssertEqual(processDescriptorCount(), before + 5, "the placeholder and four memfds")
        backend = nil
        XCTAssertEqual(processDescriptorCount(), before)
    }
}
