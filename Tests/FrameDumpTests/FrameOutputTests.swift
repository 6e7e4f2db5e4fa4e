@testable import FrameDump
import SystemPackage
import Foundation
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

final class FrameOutputTests: XCTestCase {
    /// Writes frames of `frameSize` bytes in three segments each (value = frame number).
    private func writeFrames(_ output: FrameOutput, count: Int, frameSize: Int) throws(FrameDumpError) {
        var frame = [UInt8](repeating: 0, count: frameSize)
        for index in 0..<count {
            for i in frame.indices { frame[i] = UInt8(truncatingIfNeeded: index &+ i) }
            let result = frame.withUnsafeBytes { bytes -> Result<Void, FrameDumpError> in
                output.beginFrame()
                let third = frameSize / 3
                output.append(UnsafeRawBufferPointer(rebasing: bytes[0..<third]))
                output.append(UnsafeRawBufferPointer(rebasing: bytes[third..<(2 * third)]))
                output.append(UnsafeRawBufferPointer(rebasing: bytes[(2 * third)...]))
                do throws(FrameDumpError) {
                    try output.commitFrame()
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
            try result.get()
        }
    }

    func testOneWritevPerFrameAndBytesInOrder() throws {
        let directory = makeTemporaryDirectory(self)
        let path = directory + "/frames.raw"
        let output = try FrameOutput.create(path: path, frameCapacity: 1000)
        try writeFrames(output, count: 4, frameSize: 999)
        try output.close()
        XCTAssertEqual(output.writeCalls, 4, "one writev per frame")
        XCTAssertEqual(output.framesCommitted, 4)
        XCTAssertEqual(output.committedBytes, 4 * 999)
        let bytes = readFile(path)
        XCTAssertEqual(bytes.count, 4 * 999)
        for index in 0..<4 {
            for i in stride(from: 0, to: 999, by: 97) {
                XCTAssertEqual(bytes[index * 999 + i], UInt8(truncatingIfNeeded: index + i))
            }
        }
    }

    func testNoSpaceReportsThePathAndErrno() throws {
        let output = try FrameOutput.create(path: "/dev/full", frameCapacity: 4096)
        let error = expectFrameDumpError { () throws(FrameDumpError) in try writeFrames(output, count: 2, frameSize: 300) }
        XCTAssertEqual(error?.kind, .runtime)
        XCTAssertTrue(error?.message.hasPrefix("/dev/full: write failed: ENOSPC") ?? false, error?.message ?? "")
        XCTAssertTrue(error?.message.contains("0 whole frames") ?? false, error?.message ?? "")
        XCTAssertEqual(output.framesCommitted, 0)
    }

    /// A file size limit makes the third frame's writev short and the next one fail with EFBIG:
    /// the file must be cut back to two whole frames.
    func testFailedWriteTruncatesToWholeFrames() throws {
        let directory = makeTemporaryDirectory(self)
        let path = directory + "/limited.raw"
        let frameSize = 3000
        let output = try FrameOutput.create(path: path, frameCapacity: frameSize)
        let previousHandler = signal(SIGXFSZ, SIG_IGN)
        var previous = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &previous)
        var limit = rlimit(rlim_cur: rlim_t(frameSize * 2 + frameSize / 2), rlim_max: previous.rlim_max)
        XCTAssertEqual(setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit), 0)
        let error = expectFrameDumpError { () throws(FrameDumpError) in try writeFrames(output, count: 5, frameSize: frameSize) }
        setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &previous)
        signal(SIGXFSZ, previousHandler)
        try output.close()
        XCTAssertTrue(error?.message.hasPrefix("\(path): write failed: EFBIG") ?? false, error?.message ?? "")
        XCTAssertTrue(error?.message.contains("truncated to the last whole frame: 2 frames, 6000 bytes") ?? false, error?.message ?? "")
        XCTAssertEqual(output.framesCommitted, 2)
        let bytes = readFile(path)
        XCTAssertEqual(bytes.count, 2 * frameSize, "only whole frames are kept")
        XCTAssertEqual(bytes.last, UInt8(truncatingIfNeeded: 1 + frameSize - 1))
    }

    func testStandardOutputDescriptorIsNotClosed() throws {
        let directory = makeTemporaryDirectory(self)
        let path = directory + "/stdout.raw"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let output = FrameOutput.wrapping(descriptor: fd, frameCapacity: 100)
        XCTAssertEqual(output.displayName, "standard output")
        try writeFrames(output, count: 2, frameSize: 90)
        try output.close()
        XCTAssertEqual(fcntl(fd, F_GETFD), FD_CLOEXEC & 0, "the descriptor stays open")
        XCTAssertEqual(readFile(path).count, 180)
    }

    func testWritabilityChecks() {
        XCTAssertNoThrow(try FrameOutput.checkWritable(path: "-"))
        XCTAssertNoThrow(try FrameOutput.checkWritable(path: makeTemporaryDirectory(self) + "/new.raw"))
        let missing = expectFrameDumpError { () throws(FrameDumpError) in try FrameOutput.checkWritable(path: "/no/such/dir/out.raw") }
        XCTAssertEqual(missing?.message, "-o /no/such/dir/out.raw: cannot create the file: directory /no/such/dir: ENOENT (No such file or directory)")
        let notDirectory = expectFrameDumpError { () throws(FrameDumpError) in try FrameOutput.checkWritable(path: "/dev/null/out.raw") }
        XCTAssertTrue(notDirectory?.message.contains("/dev/null is not a directory") ?? false, notDirectory?.message ?? "")
    }
}

final class FrameOutputFallbackTests: XCTestCase {
    func testEFAULTFallsBackToCopyingThroughOneBuffer() throws {
        let path = makeTemporaryDirectory(self) + "/fallback.raw"
        let output = try FrameOutput.create(path: path, frameCapacity: 64)
        let first: [UInt8] = Array(0..<20)
        let second: [UInt8] = Array(100..<130)
        func frame() throws(FrameDumpError) {
            let result = first.withUnsafeBytes { a in
                second.withUnsafeBytes { b -> Result<Void, FrameDumpError> in
                    output.beginFrame()
                    output.append(a)
                    output.append(b)
                    do throws(FrameDumpError) {
                        try output.commitFrame()
                        return .success(())
                    } catch {
                        return .failure(error)
                    }
                }
            }
            try result.get()
        }
        try frame()
        XCTAssertFalse(output.usesCopyFallback)
        output.simulatesBadAddressOnce = true
        try frame()
        XCTAssertTrue(output.usesCopyFallback, "EFAULT switches to the copy buffer")
        try frame()
        try output.close()
        XCTAssertEqual(readFile(path), (first + second) + (first + second) + (first + second))
        XCTAssertEqual(output.framesCommitted, 3)
    }

    func testEFAULTWithAFrameLargerThanTheCopyBufferIsAnError() throws {
        let path = makeTemporaryDirectory(self) + "/toolarge.raw"
        let output = try FrameOutput.create(path: path, frameCapacity: 4096)
        let big = [UInt8](repeating: 7, count: 5000)
        output.simulatesBadAddressOnce = true
        let error = big.withUnsafeBytes { bytes -> FrameDumpError? in
            output.beginFrame()
            output.append(bytes)
            do throws(FrameDumpError) {
                try output.commitFrame()
                return nil
            } catch {
                return error
            }
        }
        XCTAssertTrue(error?.message.hasPrefix("\(path): write failed: EFAULT") ?? false, error?.message ?? "no error")
        XCTAssertEqual(readFile(path).count, 0)
    }
}

final class StopSignalTests: XCTestCase {
    func testSIGINTSetsTheStopFlag() {
        StopSignals.install()
        StopSignals.flag.reset()
        XCTAssertFalse(StopSignals.flag.isRequested)
        raise(SIGINT)
        XCTAssertTrue(StopSignals.flag.isRequested, "the handler set the flag instead of ending the process")
        StopSignals.flag.reset()
        raise(SIGTERM)
        XCTAssertTrue(StopSignals.flag.isRequested)
        StopSignals.flag.reset()
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
        signal(SIGPIPE, SIG_DFL)
    }
}

/// FrameOutput.create leaves nothing behind when it fails after creating the file (issue 14).
final class FrameOutputCreateTests: XCTestCase {
    func testFailedTruncateRemovesTheFileItCreated() throws {
        let directory = makeTemporaryDirectory(self)
        let path = directory + "/new.raw"
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            _ = try FrameOutput.create(path: path, frameCapacity: 1, directIO: .off, truncate: { _ in errno = EIO; return -1 })
        }
        XCTAssertTrue(error?.message.contains("ftruncate failed: EIO") ?? false, error?.message ?? "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "a file this call created is removed")

        let existing = directory + "/existing.raw"
        XCTAssertTrue(FileManager.default.createFile(atPath: existing, contents: Data([1, 2, 3])))
        _ = expectFrameDumpError { () throws(FrameDumpError) in
            _ = try FrameOutput.create(path: existing, frameCapacity: 1, directIO: .off, truncate: { _ in errno = EIO; return -1 })
        }
        XCTAssertEqual(readFile(existing), [1, 2, 3], "a file that was there is left as it was")
    }
}
