import SystemPackage
import CV4L2
import Dispatch
import FrameBridge
import FrameBridgeTestSupport
import V4L2
import V4L2Simulator
import XCTest

/// The smaller defects of issue 14, each shown by the case that hit it.
final class SmallDefectTests: XCTestCase {
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

    /// addFrames racing stop(): the pool is never grown or queued after stop() deleted it.
    func testAddFramesRacingStop() throws {
        for round in 0..<20 {
            let rig = try SimRig(.singlePlanar)
            try rig.pin.start()
            let pin = rig.pin
            let done = DispatchSemaphore(value: 0)
            Thread {
                for _ in 0..<4 { try? pin.addFrames(1) }
                done.signal()
            }.start()
            if round % 2 == 0 { usleep(UInt32(round * 20)) }
            pin.stop()
            XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
            rig.assertTornDown("round \(round)")
            XCTAssertThrowsError(try pin.addFrames(1)) { error in
                XCTAssertTrue("\(error)".contains("no buffers to add to"), "\(error)")
            }
        }
    }

    /// A device whose CREATE_BUFS does not answer cannot grow, and the framing says so.
    func testCanGrowOnlyWhenCreateBufsAnswers() throws {
        let growing = try SimRig(.singlePlanar)
        XCTAssertTrue(growing.pin.framing.items[0].flags.contains(.canGrow))
        let backend = SimulatedV4L2Backend()
        backend.addDevice(path: capturePath, configuration: Layout.singlePlanar.deviceConfiguration())
        XCTAssertTrue(backend.injectFault(.failNext(request: CV4L2_VIDIOC_CREATE_BUFS, errno: .inappropriateIOCTLForDevice), path: capturePath))
        let device = try VideoDevice(path: capturePath, backend: backend)
        let framing = try AllocatorFraming.query(device: device, bufferType: .videoCapture)
        XCTAssertFalse(framing.items[0].flags.contains(.canGrow), "\(framing.items[0].flags)")
    }

    /// A driver that grants 0 USERPTR buffers: the allocator says so instead of streaming none.
    func testZeroUserPointerGrantIsAnError() throws {
        let inner = SimulatedV4L2Backend()
        inner.addDevice(path: capturePath, configuration: Layout.singlePlanar.deviceConfiguration())
        let backend = ZeroUserPointerGrantBackend(inner)
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

/// Forwards to the simulator but answers a USERPTR REQBUFS with count 0.
final class ZeroUserPointerGrantBackend: DeviceBackend {
    let inner: SimulatedV4L2Backend
    init(_ inner: SimulatedV4L2Backend) { self.inner = inner }
    var name: String { "zero-grant" }
    func open(path: String, flags: Int32) -> Result<Int32, Errno> { inner.open(path: path, flags: flags) }
    func close(_ descriptor: Int32) -> Errno? { inner.close(descriptor) }
    func ioctl(_ descriptor: Int32, request: UInt, argument: UnsafeMutableRawPointer) -> Errno? {
        let answer = inner.ioctl(descriptor, request: request, argument: argument)
        if request == CV4L2_VIDIOC_REQBUFS, answer == nil {
            let request = argument.assumingMemoryBound(to: v4l2_requestbuffers.self)
            if request.pointee.memory == V4L2_MEMORY_USERPTR.rawValue { request.pointee.count = 0 }
        }
        return answer
    }
    func mmap(_ descriptor: Int32, length: Int, protection: Int32, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno> {
        inner.mmap(descriptor, length: length, protection: protection, offset: offset)
    }
    func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Errno? { inner.munmap(address, length: length) }
    func poll(_ descriptor: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
        inner.poll(descriptor, events: events, timeoutMilliseconds: timeoutMilliseconds)
    }
    func poll(_ descriptor: Int32, events: Int16, wakeup: Int32, timeoutMilliseconds: Int32) -> Result<(revents: Int16, woken: Bool), Errno> {
        inner.poll(descriptor, events: events, wakeup: wakeup, timeoutMilliseconds: timeoutMilliseconds)
    }
}
