import SystemPackage
import CV4L2
import FrameBridge
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A DRM driver for ``DRMDumbBufferExporter`` with no kernel behind it: the node is /dev/null,
/// CREATE_DUMB hands out handles, PRIME_HANDLE_TO_FD a real descriptor (an eventfd) per handle
/// and fails at the call a test picks, GEM_CLOSE frees a handle.
private final class FakeDRMBackend: DeviceBackend {
    struct State {
        var primeCalls = 0
        var nextHandle: UInt32 = 1
        var liveHandles: Set<UInt32> = []
        var openNodes: Set<Int32> = []
    }
    let state = Locked(State())
    /// The 1-based PRIME_HANDLE_TO_FD call that fails with ENOMEM (nil: none).
    let failingPrimeCall: Int?

    init(failingPrimeCall: Int?) { self.failingPrimeCall = failingPrimeCall }

    var name: String { "fake drm" }
    var liveHandles: Int { state.withLock { $0.liveHandles.count } }
    var openNodes: Int { state.withLock { $0.openNodes.count } }

    func open(path: String, flags: Int32) -> Result<Int32, Errno> {
        let fd = Glibc.open("/dev/null", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return .failure(.current) }
        state.withLock { _ = $0.openNodes.insert(fd) }
        return .success(fd)
    }

    func close(_ descriptor: Int32) -> Errno? {
        state.withLock { _ = $0.openNodes.remove(descriptor) }
        return Glibc.close(descriptor) == 0 ? nil : .current
    }

    func ioctl(_ descriptor: Int32, request: UInt, argument: UnsafeMutableRawPointer) -> Errno? {
        let address = UInt(bitPattern: argument)
        return state.withLock { state -> Errno? in
            let argument = UnsafeMutableRawPointer(bitPattern: address)!
            switch request {
            case CV4L2_DRM_IOCTL_MODE_CREATE_DUMB:
                let create = argument.assumingMemoryBound(to: cv4l2_drm_mode_create_dumb.self)
                create.pointee.handle = state.nextHandle
                create.pointee.pitch = create.pointee.width * create.pointee.bpp / 8
                create.pointee.size = UInt64(create.pointee.pitch) * UInt64(create.pointee.height)
                state.liveHandles.insert(state.nextHandle)
                state.nextHandle += 1
                return nil
            case CV4L2_DRM_IOCTL_PRIME_HANDLE_TO_FD:
                state.primeCalls += 1
                if state.primeCalls == failingPrimeCall { return .noMemory }
                let prime = argument.assumingMemoryBound(to: cv4l2_drm_prime_handle.self)
                guard state.liveHandles.contains(prime.pointee.handle) else { return .invalidArgument }
                let fd = eventfd(0, Int32(EFD_CLOEXEC))
                guard fd >= 0 else { return .current }
                prime.pointee.fd = fd
                return nil
            case CV4L2_DRM_IOCTL_GEM_CLOSE:
                let close = argument.assumingMemoryBound(to: cv4l2_drm_gem_close.self)
                return state.liveHandles.remove(close.pointee.handle) == nil ? .invalidArgument : nil
            default:
                return .inappropriateIOCTLForDevice
            }
        }
    }

    func mmap(_ descriptor: Int32, length: Int, protection: Int32, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno> {
        .failure(.noSuchDevice)
    }

    func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Errno? { .invalidArgument }

    func poll(_ descriptor: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> { .success(0) }
}

/// An exporter whose later step fails closes every descriptor it made: the planes of the
/// buffers already made, the planes of the half-made buffer, and its own device.
final class DMABufExporterCleanupTests: XCTestCase {
    /// Two buffers of two planes: PRIME_HANDLE_TO_FD fails at each of its four calls in turn.
    func testDRMExporterClosesAHalfMadeMultiPlaneBufferWhenALaterStepFails() {
        for failing in 1...4 {
            let backend = FakeDRMBackend(failingPrimeCall: failing)
            let exporter = DRMDumbBufferExporter(path: "/dev/dri/card7", backend: backend)
            let before = processDescriptorCount()
            XCTAssertThrowsError(try exporter.export(count: 2, planeSizes: [4096, 2048]), "call \(failing)") { error in
                XCTAssertTrue("\(error)".contains("DRM_IOCTL_PRIME_HANDLE_TO_FD failed"), "\(error)")
            }
            XCTAssertEqual(processDescriptorCount(), before, "PRIME_HANDLE_TO_FD call \(failing) failed: descriptors leaked")
            XCTAssertEqual(backend.liveHandles, 0, "call \(failing): GEM handles left open")
            XCTAssertEqual(backend.openNodes, 0, "call \(failing): the DRM node was left open")
            exporter.release()
        }
    }

    /// The good path: the caller owns the dmabufs it gets; release closes the node and the handles.
    func testDRMExporterHandsOverItsDescriptorsAndReleasesTheRest() throws {
        let backend = FakeDRMBackend(failingPrimeCall: nil)
        let exporter = DRMDumbBufferExporter(path: "/dev/dri/card7", backend: backend)
        let before = processDescriptorCount()
        let buffers = try exporter.export(count: 3, planeSizes: [4096, 2048])
        XCTAssertEqual(buffers.map(\.count), [2, 2, 2])
        XCTAssertEqual(processDescriptorCount(), before + 1 + 6, "the node and six dmabufs")
        for buffer in buffers { for plane in buffer { XCTAssertEqual(Glibc.close(plane.fd), 0) } }
        exporter.release()
        XCTAssertEqual(processDescriptorCount(), before)
        XCTAssertEqual(backend.liveHandles, 0)
        XCTAssertEqual(backend.openNodes, 0)
    }

    /// VIDIOC_EXPBUF of a two-plane buffer fails at each call in turn: the planes already
    /// exported are closed and the exporting device is closed.
    func testV4L2ExporterClosesAHalfMadeMultiPlaneBufferWhenALaterStepFails() throws {
        let path = "/dev/video1"
        for successes in 0..<4 {
            let backend = SimulatedV4L2Backend(path: path, configuration: SimulatedDeviceConfiguration(
                multiplanar: true, initialPixelFormat: FourCC("NM12")!))
            backend.injectFault(.failAfter(request: CV4L2_VIDIOC_EXPBUF, successes: successes, errno: .noMemory), path: path)
            let exporter = V4L2BufferExporter(path: path, backend: backend)
            let before = processDescriptorCount()
            XCTAssertThrowsError(try exporter.export(count: 2, planeSizes: [1, 1]), "EXPBUF \(successes + 1)") { error in
                XCTAssertTrue("\(error)".contains("VIDIOC_EXPBUF"), "\(error)")
            }
            XCTAssertEqual(processDescriptorCount(), before, "EXPBUF call \(successes + 1) failed: descriptors leaked")
            XCTAssertEqual(backend.openDescriptorCount(path: path), 0, "the exporting device was left open")
            XCTAssertEqual(backend.queueState(path: path)?.bufferCount, 0, "buffers left on the exporting device")
            XCTAssertEqual(backend.pendingFaults(path: path), [])
        }
    }
}
