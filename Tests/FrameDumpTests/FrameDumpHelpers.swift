// FrameDumpTests' helpers: temporary directories and files, captures, the simulator's pattern bytes.
import FrameBridge
import FrameBridgeTestSupport
import FrameDump
import Foundation
import V4L2
import V4L2Simulator
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A fresh temporary directory, removed at the end of the test.
func makeTemporaryDirectory(_ testCase: XCTestCase) -> String {
    var template = Array("/tmp/framedump-test-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { buffer -> String in
        guard let result = mkdtemp(buffer.baseAddress!) else { return "/tmp" }
        return String(cString: result)
    }
    testCase.addTeardownBlock {
        try? FileManager.default.removeItem(atPath: path)
    }
    return path
}

func readFile(_ path: String) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else { return [] }
    return [UInt8](data)
}

func fileExists(_ path: String) -> Bool {
    access(path, F_OK) == 0
}

/// Runs `body`, expecting a ``FrameDumpError``; fails the test when none is thrown.
func expectFrameDumpError<T>(_ body: () throws(FrameDumpError) -> T, file: StaticString = #filePath, line: UInt = #line) -> FrameDumpError? {
    expectError(body, file: file, line: line)
}

/// Runs `body`, expecting an ``OptionValueError``; fails the test when none is thrown.
func expectOptionValueError<T>(_ body: () throws(OptionValueError) -> T, file: StaticString = #filePath, line: UInt = #line) -> OptionValueError? {
    expectError(body, file: file, line: line)
}

/// Runs a capture with its own stop flag.
func runCapture(_ options: CaptureOptions, stopFlag: StopFlag = StopFlag(),
                afterFrame: ((Int) -> Void)? = nil) throws(FrameDumpError) -> CaptureSummary {
    let session = CaptureSession(options: options, stopFlag: stopFlag)
    session.afterFrame = afterFrame
    return try session.run()
}

/// The bytes the simulator puts in the payload of `plane` (from `dataOffset`, `count` bytes)
/// of the frame with `sequence`.
func patternBytes(sequence: UInt32, plane: Int, dataOffset: Int, count: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { SimulatedPattern.fill($0, sequence: sequence, plane: plane, startOffset: dataOffset) }
    return bytes
}
