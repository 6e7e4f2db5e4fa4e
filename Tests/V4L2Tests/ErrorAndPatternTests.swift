import SystemPackage
import CV4L2
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// V4L2Error texts from simulator failures, and the frame pattern.
final class ErrorAndPatternTests: XCTestCase {
    func testErrorDescriptionNamesDeviceIoctlAndErrno() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        let buffer = try device.queryBuffer(index: 0, bufferType: .videoCapture, memory: .mmap)
        try device.queue(buffer)
        let error = try XCTUnwrap(expectError { () throws(V4L2Error) in try device.queue(buffer) })
        let text = error.description
        XCTAssertTrue(text.hasPrefix("/dev/video0: VIDIOC_QBUF failed: EINVAL"), text)
        XCTAssertTrue(text.contains("Invalid argument"), text)
    }

    func testBusyErrorDescriptionCarriesTheHint() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.startMMAPStreaming()
        let error = try XCTUnwrap(expectError { () throws(V4L2Error) in
            try device.requestBuffers(count: 2, bufferType: .videoCapture, memory: .mmap)
        })
        XCTAssertTrue(error.description.contains("/dev/video0: VIDIOC_REQBUFS failed: EBUSY"), error.description)
        XCTAssertTrue(error.description.contains("2 mmap buffers"), error.description)
        XCTAssertTrue(error.description.contains("buffers are still allocated"), error.description)
    }

    func testPatternFillAgreesWithTheByteFunctionAtAnyAlignment() {
        let count = 3000
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count + 16, alignment: 16)
        defer { memory.deallocate() }
        for start in [0, 1, 7, 8, 255, 256, 4093] {
            for shift in [0, 3] {
                memory.initializeMemory(as: UInt8.self, repeating: 0xAA)
                let target = UnsafeMutableRawBufferPointer(rebasing: memory[shift..<(shift + count)])
                SimulatedPattern.fill(target, sequence: 42, plane: 1, startOffset: start)
                for i in [0, 1, 5, 8, 100, 255, 256, 1023, 2999] {
                    XCTAssertEqual(target[i], SimulatedPattern.byte(sequence: 42, plane: 1, offset: start + i),
                                   "start \(start) shift \(shift) byte \(i)")
                }
                XCTAssertNil(SimulatedPattern.firstMismatch(in: UnsafeRawBufferPointer(target), sequence: 42, plane: 1, startOffset: start))
                XCTAssertEqual(memory[shift + count], 0xAA, "no write past the end")
                if shift > 0 { XCTAssertEqual(memory[shift - 1], 0xAA, "no write before the start") }
            }
        }
    }

    func testPatternTellsFramesPlanesAndShiftsApart() {
        let count = 4096
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 8)
        defer { memory.deallocate() }
        SimulatedPattern.fill(memory, sequence: 7, plane: 0)
        let view = UnsafeRawBufferPointer(memory)
        XCTAssertTrue(SimulatedPattern.matches(view, sequence: 7, plane: 0))
        XCTAssertFalse(SimulatedPattern.matches(view, sequence: 8, plane: 0))
        XCTAssertFalse(SimulatedPattern.matches(view, sequence: 7, plane: 1))
        XCTAssertFalse(SimulatedPattern.matches(view, sequence: 7, plane: 0, startOffset: 256))
        XCTAssertFalse(SimulatedPattern.matches(view, sequence: 7, plane: 0, startOffset: 1))
        XCTAssertEqual(SimulatedPattern.firstMismatch(in: view, sequence: 7, plane: 0), nil)
        memory[1000] ^= 1
        XCTAssertEqual(SimulatedPattern.firstMismatch(in: view, sequence: 7, plane: 0), 1000)
    }
}
