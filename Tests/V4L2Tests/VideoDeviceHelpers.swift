// V4L2Tests' helpers: raw ioctls, MMAP streaming and pattern checks on a simulated VideoDevice.
import SystemPackage
import CV4L2
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The simulated device V4L2Tests open: the support target's ``simulatedPath``, under the name
/// these tests use.
let videoPath = simulatedPath

extension VideoDevice {
    /// A raw ioctl through the backend, without retries.
    func raw<T>(_ request: UInt, _ argument: inout T) -> Errno? {
        withUnsafeMutablePointer(to: &argument) { backend.ioctl(descriptor, request: request, argument: UnsafeMutableRawPointer($0)) }
    }

    /// The capture buffer type of the node.
    var captureType: BufferType { capabilities.captureBufferType! }

    /// QUERYBUF of every buffer and mmap of each plane.
    func mapAll(count: Int, bufferType: BufferType) throws(V4L2Error) -> [[UnsafeMutableRawBufferPointer]] {
        var result: [[UnsafeMutableRawBufferPointer]] = []
        for index in 0..<count {
            let buffer = try queryBuffer(index: UInt32(index), bufferType: bufferType, memory: .mmap)
            var planes: [UnsafeMutableRawBufferPointer] = []
            for p in 0..<buffer.planeCount {
                planes.append(try map(length: Int(buffer.planes[p].length), offset: buffer.planes[p].mapOffset))
            }
            result.append(planes)
        }
        return result
    }

    func unmapAll(_ mappings: [[UnsafeMutableRawBufferPointer]]) {
        for planes in mappings { for plane in planes { unmap(plane) } }
    }

    /// REQBUFS of `count` MMAP buffers, QBUF of each, STREAMON.
    @discardableResult
    func startMMAPStreaming(count: UInt32 = 4) throws(V4L2Error) -> UInt32 {
        let type = captureType
        let granted = try requestBuffers(count: count, bufferType: type, memory: .mmap)
        for index in 0..<granted.count {
            try queue(try queryBuffer(index: index, bufferType: type, memory: .mmap))
        }
        try streamOn(type)
        return granted.count
    }

    /// DQBUF that must return a buffer.
    func dequeueFrame(memory: MemoryKind = .mmap, file: StaticString = #filePath, line: UInt = #line) throws -> BufferDescriptor {
        try XCTUnwrap(try dequeue(bufferType: captureType, memory: memory), "DQBUF gave EAGAIN", file: file, line: line)
    }
}

/// The bytes of a frame's plane match the simulator's pattern for `sequence`.
func assertPattern(_ memory: UnsafeRawBufferPointer, sequence: UInt32, plane: Int, count: Int,
                   file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertGreaterThan(count, 0, "empty payload", file: file, line: line)
    XCTAssertLessThanOrEqual(count, memory.count, "payload larger than the mapping", file: file, line: line)
    let payload = UnsafeRawBufferPointer(rebasing: memory[0..<min(count, memory.count)])
    if let mismatch = SimulatedPattern.firstMismatch(in: payload, sequence: sequence, plane: plane) {
        XCTFail("plane \(plane) of frame \(sequence) differs from the pattern at byte \(mismatch): "
                + "\(payload[mismatch]) != \(SimulatedPattern.byte(sequence: sequence, plane: plane, offset: mismatch))",
                file: file, line: line)
    }
}

