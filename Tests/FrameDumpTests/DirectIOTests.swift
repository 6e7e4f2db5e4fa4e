import FrameDump
import Foundation
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// FrameOutput's O_DIRECT path and its fall-backs to the page cache, on the host's file systems.
final class DirectIOTests: XCTestCase {
    /// Page-aligned memory, freed at the end of the test, filled with a pattern that differs per `seed`.
    private func alignedBuffer(_ size: Int, seed: Int) -> UnsafeMutableRawBufferPointer {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
        for i in 0..<size { buffer[i] = UInt8(truncatingIfNeeded: (i &* 31) &+ seed &* 7 &+ i / 4096) }
        addTeardownBlock { buffer.deallocate() }
        return buffer
    }

    /// Writes one frame made of `segments` and returns its bytes, as a reader of the file expects them.
    @discardableResult
    private func writeFrame(_ output: FrameOutput, _ segments: [UnsafeRawBufferPointer],
                            file: StaticString = #filePath, line: UInt = #line) throws -> [UInt8] {
        output.beginFrame()
        for segment in segments { output.append(segment) }
        try output.commitFrame()
        return segments.flatMap { Array($0) }
    }

    /// The host directory for the tests that need a file system doing O_DIRECT: a fresh one in
    /// /tmp when that is ext4, xfs or btrfs. Elsewhere the test is skipped, saying why, never passed.
    private func directIODirectory() throws -> String {
        let directory = makeTemporaryDirectory(self)
        let type = fileSystemType(of: directory)
        guard ["ext4", "xfs", "btrfs"].contains(type) else {
            throw XCTSkip("\(directory) is on \(type ?? "an unknown file system"), not one known to do O_DIRECT (ext4, xfs, btrfs)")
        }
        return directory
    }

    /// The type of the file system `path` is on (the longest mount point in /proc/self/mounts).
    private func fileSystemType(of path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        let target = String(cString: resolved)
        free(resolved)
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return nil }
        var best: (point: String, type: String)?
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            let point = String(fields[1]).replacingOccurrences(of: "\\040", with: " ")
            let inside = point == "/" || target == point || target.hasPrefix(point + "/")
            if inside && point.count >= (best?.point.count ?? -1) { best = (point, String(fields[2])) }
        }
        return best?.type
    }

    /// Pages of `path` in [offset, offset + length) resident in the page cache (mmap + mincore).
    private func residentPages(_ path: String, offset: Int, length: Int) -> Int {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return -1 }
        defer { close(fd) }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, off_t(offset)), map != MAP_FAILED else { return -1 }
        defer { munmap(map, length) }
        var vector = [UInt8](repeating: 0, count: (length + page - 1) / page)
        guard mincore(map, length, &vector) == 0 else { return -1 }
        return vector.filter { $0 & 1 != 0 }.count
    }

    private func alignments(_ output: FrameOutput, file: StaticString = #filePath, line: UInt = #line) throws -> (memory: Int, offset: Int) {
        guard case let .active(memory, offset, reported) = output.directIO else {
            XCTFail("direct I/O is not active on \(output.path): \(output.directIO)", file: file, line: line)
            throw XCTSkip("no direct I/O")
        }
        print("direct-io: \(output.path): memory alignment \(memory), offset alignment \(offset), from statx: \(reported)")
        return (memory, offset)
    }

    /// Aligned frames on a disk file system go direct: one writev each, the bytes in order, and
    /// none of them in the page cache afterwards.
    func testAlignedFramesGoDirectOnADiskFileSystem() throws {
        let path = try directIODirectory() + "/direct.raw"
        let output = try FrameOutput.create(path: path, frameCapacity: 1 << 20)
        _ = try alignments(output)
        let frameSize = 64 * 1024
        var expected: [UInt8] = []
        for index in 0..<4 {
            let buffer = alignedBuffer(frameSize, seed: index)
            expected += try writeFrame(output, [UnsafeRawBufferPointer(rebasing: buffer[0..<(frameSize / 2)]),
                                                UnsafeRawBufferPointer(rebasing: buffer[(frameSize / 2)...])])
        }
        XCTAssertEqual(output.framesDirect, 4)
        XCTAssertEqual(output.framesBuffered, 0)
        XCTAssertEqual(output.writeCalls, 4, "one writev per frame")
        try output.close()
        XCTAssertEqual(residentPages(path, offset: 0, length: 4 * frameSize), 0, "direct writes leave nothing in the page cache")
        // The same frames through the page cache stay there: the check above can see pages.
        let bufferedPath = path + ".buffered"
        let buffered = try FrameOutput.create(path: bufferedPath, frameCapacity: 1 << 20, directIO: .off)
        for index in 0..<4 { try writeFrame(buffered, [UnsafeRawBufferPointer(alignedBuffer(frameSize, seed: index))]) }
        try buffered.close()
        XCTAssertGreaterThan(residentPages(bufferedPath, offset: 0, length: 4 * frameSize), 0)
        XCTAssertEqual(readFile(path), expected)
        XCTAssertEqual(readFile(bufferedPath), expected)
    }

    /// Frames that are not aligned go through the page cache, each still one writev, and the file
    /// holds exactly the bytes given: an unaligned address, a partial last block, and an aligned
    /// frame at the unaligned file offset that follows it.
    func testUnalignedFramesFallBackPerFrameAndStayByteIdentical() throws {
        let path = try directIODirectory() + "/mixed.raw"
        let output = try FrameOutput.create(path: path, frameCapacity: 1 << 20)
        let (memory, offset) = try alignments(output)
        let size = 16 * max(offset, 4096)
        var expected: [UInt8] = []
        var kinds: [String] = []
        func frame(_ segments: [UnsafeRawBufferPointer], _ kind: String) throws {
            let before = output.framesDirect
            expected += try writeFrame(output, segments)
            kinds.append(output.framesDirect > before ? "direct" : "buffered")
            XCTAssertEqual(kinds.last, kind, "frame \(kinds.count - 1)")
        }
        let a = alignedBuffer(size + 4096, seed: 1)
        // 1. aligned: direct.
        try frame([UnsafeRawBufferPointer(rebasing: a[0..<size])], "direct")
        // 2. the address is off the memory alignment (data_offset 128 after an aligned buffer start):
        //    buffered; the length keeps the file offset aligned.
        if memory > 1 {
            let shift = min(128, memory / 2)
            try frame([UnsafeRawBufferPointer(rebasing: a[shift..<(shift + size)])], "buffered")
        }
        // 3. aligned again: direct again.
        let b = alignedBuffer(size, seed: 2)
        try frame([UnsafeRawBufferPointer(rebasing: b[0..<(size / 2)]), UnsafeRawBufferPointer(rebasing: b[(size / 2)...])], "direct")
        // 4. a partial last block: buffered.
        try frame([UnsafeRawBufferPointer(rebasing: b[0..<(size - offset / 2 - 1)])], "buffered")
        // 5. aligned memory and length, but the file offset is now unaligned: buffered.
        try frame([UnsafeRawBufferPointer(b)], "buffered")
        XCTAssertEqual(output.framesDirect, 2)
        XCTAssertEqual(output.framesBuffered, memory > 1 ? 3 : 2)
        XCTAssertEqual(output.writeCalls, output.framesCommitted, "one writev per frame")
        XCTAssertTrue(output.directIO.isActive, "unaligned frames do not turn direct I/O off")
        try output.close()
        XCTAssertEqual(readFile(path), expected)
    }

    /// A file system that refuses O_DIRECT (fcntl EINVAL, as tmpfs and 9p on Linux 6.1): with
    /// auto every frame goes through the page cache, byte-identical; with on it is an error naming
    /// the path and the errno, and a file the call created is removed.
    func testRefusedODirectFallsBackOrFailsWithOn() throws {
        let directory = makeTemporaryDirectory(self)
        let path = directory + "/refused.raw"
        let output = try FrameOutput.create(path: path, frameCapacity: 1 << 20, directIO: .off)
        output.simulatesDirectIORefusal = true
        try output.enableDirectIO(.auto)
        XCTAssertFalse(output.directIO.isActive)
        XCTAssertTrue(output.directIO.description.contains("refuses O_DIRECT: fcntl(F_SETFL, O_DIRECT) failed: EINVAL"), output.directIO.description)
        var expected: [UInt8] = []
        for index in 0..<3 { expected += try writeFrame(output, [UnsafeRawBufferPointer(alignedBuffer(8192, seed: index))]) }
        XCTAssertEqual(output.framesDirect, 0)
        XCTAssertEqual(output.framesBuffered, 3)
        XCTAssertEqual(output.writeCalls, 3)
        try output.close()
        XCTAssertEqual(readFile(path), expected)

        let strict = try FrameOutput.create(path: directory + "/strict.raw", frameCapacity: 4096, directIO: .off)
        strict.simulatesDirectIORefusal = true
        let error = expectFrameDumpError { () throws(FrameDumpError) in try strict.enableDirectIO(.on) }
        XCTAssertEqual(error?.kind, .usage)
        XCTAssertEqual(error?.message, "-o \(directory)/strict.raw: --direct-io on: the file system refuses O_DIRECT: fcntl(F_SETFL, O_DIRECT) failed: EINVAL (Invalid argument)")
        try strict.close()
    }

    /// Outputs that never go direct: a character device, standard output, --direct-io off, and
    /// --direct-io on where the output is not a regular file.
    func testNonRegularOutputsAndOffStayBuffered() throws {
        let null = try FrameOutput.create(path: "/dev/null", frameCapacity: 4096)
        XCTAssertEqual(null.directIO, .inactive("/dev/null is not a regular file"))
        try writeFrame(null, [UnsafeRawBufferPointer(alignedBuffer(4096, seed: 0))])
        XCTAssertEqual(null.framesBuffered, 1)
        try null.close()
        let onNull = expectFrameDumpError { () throws(FrameDumpError) in _ = try FrameOutput.create(path: "/dev/null", frameCapacity: 4096, directIO: .on) }
        XCTAssertEqual(onNull?.message, "-o /dev/null: --direct-io on: /dev/null is not a regular file")
        XCTAssertTrue(fileExists("/dev/null"))

        let directory = makeTemporaryDirectory(self)
        let fd = open(directory + "/stdout.raw", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        defer { close(fd) }
        let standardOutput = FrameOutput.wrapping(descriptor: fd, frameCapacity: 4096)
        try standardOutput.enableDirectIO(.auto)
        XCTAssertEqual(standardOutput.directIO, .inactive("standard output is written through the page cache"))

        let off = try FrameOutput.create(path: directory + "/off.raw", frameCapacity: 4096, directIO: .off)
        XCTAssertEqual(off.directIO, .inactive("off (--direct-io off)"))
        try writeFrame(off, [UnsafeRawBufferPointer(alignedBuffer(4096, seed: 0))])
        XCTAssertEqual(off.framesDirect, 0)
        try off.close()
    }

    /// --direct-io on leaves a file it rejects as it was: an existing file keeps its bytes
    /// (nothing is truncated before the check), a new one is removed.
    func testDirectIOOnRejectionLeavesTheFileAsItWas() throws {
        let directory = makeTemporaryDirectory(self)
        let existing = directory + "/existing.raw"
        XCTAssertTrue(FileManager.default.createFile(atPath: existing, contents: Data([1, 2, 3])))
        // A fifo is not a regular file: `on` rejects it after opening.
        let fifo = directory + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)
        defer { close(reader) }
        let error = expectFrameDumpError { () throws(FrameDumpError) in _ = try FrameOutput.create(path: fifo, frameCapacity: 4096, directIO: .on) }
        XCTAssertEqual(error?.message, "-o \(fifo): --direct-io on: \(fifo) is not a regular file")
        XCTAssertTrue(fileExists(fifo), "an existing node is not removed")
        // A regular file that stays (auto): truncated only once accepted.
        let output = try FrameOutput.create(path: existing, frameCapacity: 4096)
        try output.close()
        XCTAssertEqual(readFile(existing).count, 0, "an accepted file is truncated as with O_TRUNC")
    }

    /// A direct writev that the file system refuses (EINVAL) is repeated through the page cache,
    /// and the rest of the stream stays there.
    func testDirectWriteRefusedAtWriteTimeFallsBackForTheRest() throws {
        let path = try directIODirectory() + "/einval.raw"
        let output = try FrameOutput.create(path: path, frameCapacity: 1 << 20)
        _ = try alignments(output)
        var expected: [UInt8] = []
        expected += try writeFrame(output, [UnsafeRawBufferPointer(alignedBuffer(32768, seed: 0))])
        output.simulatesDirectWriteRefusalOnce = true
        for index in 1..<4 { expected += try writeFrame(output, [UnsafeRawBufferPointer(alignedBuffer(32768, seed: index))]) }
        XCTAssertEqual(output.framesDirect, 1)
        XCTAssertEqual(output.framesBuffered, 3)
        XCTAssertEqual(output.writeCalls, 5, "the refused writev, then one per frame")
        XCTAssertFalse(output.directIO.isActive)
        XCTAssertTrue(output.directIO.description.contains("refused a writev with O_DIRECT (EINVAL (Invalid argument)) after 1 frames"), output.directIO.description)
        try output.close()
        XCTAssertEqual(readFile(path), expected)
    }

    /// EFAULT on a direct writev (memory the kernel cannot pin) goes back to buffered writev, not
    /// to the copy buffer; a buffered EFAULT later still switches to the copy buffer.
    func testEFAULTOnADirectWriteFallsBackToBufferedWritev() throws {
        let path = try directIODirectory() + "/efault.raw"
        let output = try FrameOutput.create(path: path, frameCapacity: 1 << 20)
        _ = try alignments(output)
        var expected: [UInt8] = []
        output.simulatesBadAddressOnce = true
        expected += try writeFrame(output, [UnsafeRawBufferPointer(alignedBuffer(16384, seed: 0))])
        XCTAssertFalse(output.usesCopyFallback)
        XCTAssertFalse(output.directIO.isActive)
        XCTAssertTrue(output.directIO.description.contains("EFAULT"), output.directIO.description)
        output.simulatesBadAddressOnce = true
        expected += try writeFrame(output, [UnsafeRawBufferPointer(alignedBuffer(16384, seed: 1))])
        XCTAssertTrue(output.usesCopyFallback)
        expected += try writeFrame(output, [UnsafeRawBufferPointer(alignedBuffer(16384, seed: 2))])
        XCTAssertEqual(output.framesDirect, 0)
        try output.close()
        XCTAssertEqual(readFile(path), expected)
    }

    /// A file size limit hit by a direct write: the file is cut back to whole frames, as with
    /// buffered writes.
    func testFailedDirectWriteTruncatesToWholeFrames() throws {
        let path = try directIODirectory() + "/limited.raw"
        let frameSize = 65536
        let output = try FrameOutput.create(path: path, frameCapacity: frameSize)
        _ = try alignments(output)
        let previousHandler = signal(SIGXFSZ, SIG_IGN)
        var previous = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &previous)
        var limit = rlimit(rlim_cur: rlim_t(frameSize * 2 + frameSize / 2), rlim_max: previous.rlim_max)
        XCTAssertEqual(setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit), 0)
        var thrown: FrameDumpError?
        do {
            for index in 0..<5 { try writeFrame(output, [UnsafeRawBufferPointer(alignedBuffer(frameSize, seed: index))]) }
        } catch let error as FrameDumpError {
            thrown = error
        }
        setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &previous)
        signal(SIGXFSZ, previousHandler)
        try output.close()
        XCTAssertTrue(thrown?.message.hasPrefix("\(path): write failed: EFBIG") ?? false, thrown?.message ?? "no error")
        XCTAssertTrue(thrown?.message.contains("truncated to the last whole frame: 2 frames, \(2 * frameSize) bytes") ?? false, thrown?.message ?? "")
        XCTAssertEqual(output.framesDirect, 2)
        XCTAssertEqual(readFile(path).count, 2 * frameSize, "only whole frames are kept")
    }
}

/// The capture session's use of direct I/O, on the simulated device.
final class CaptureDirectIOTests: XCTestCase {
    /// The simulator's MMAP buffers are page-aligned and a 640x360 YUYV frame is 900 blocks of
    /// 512 bytes: on a disk file system every frame goes direct (when its alignment is 512),
    /// and the summary says so.
    func testRawCaptureReportsDirectAndBufferedFrames() throws {
        let directory = makeTemporaryDirectory(self)
        let path = directory + "/capture.raw"
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: makeBackend(), count: 6, outputPath: path))
        XCTAssertEqual(summary.framesDirect + summary.framesBuffered, 6)
        let directIO = try XCTUnwrap(summary.directIO)
        print("direct-io: capture to \(path): \(summary.framesDirect) direct, \(summary.framesBuffered) buffered; \(directIO)")
        if directIO.hasPrefix("O_DIRECT for aligned frames: memory alignment "), directIO.contains("offset alignment 512 ") {
            XCTAssertEqual(summary.framesDirect, 6, directIO)
        }
        XCTAssertTrue(summary.render().contains("direct i/o       : \(summary.framesDirect) frames direct, \(summary.framesBuffered) through the page cache; "),
                      summary.render())
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(summary.json().utf8)) as? [String: Any])
        XCTAssertEqual(json["framesDirect"] as? Int, summary.framesDirect)
        XCTAssertEqual(json["framesBuffered"] as? Int, summary.framesBuffered)
        XCTAssertEqual(json["directIO"] as? String, directIO)

        let off = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: makeBackend(), count: 3,
                                                outputPath: directory + "/off.raw", directIO: .off))
        XCTAssertEqual(off.framesDirect, 0)
        XCTAssertEqual(off.framesBuffered, 3)
        XCTAssertEqual(off.directIO, "not used: off (--direct-io off)")
        XCTAssertEqual(readFile(directory + "/off.raw"), readFile(path).prefix(3 * 640 * 360 * 2).map { $0 }, "same bytes either way")

        let y4m = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: makeBackend(), count: 2,
                                                outputPath: directory + "/out.y4m", container: .y4m))
        XCTAssertEqual(y4m.framesDirect, 0)
        XCTAssertEqual(y4m.directIO, "not used: y4m frames start with a FRAME header, never aligned for O_DIRECT")

        let none = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: makeBackend(), count: 1))
        XCTAssertNil(none.directIO)
        XCTAssertFalse(none.render().contains("direct i/o"))
    }

    /// The simulator's multi-planar device with a 128-byte data_offset: the payload starts off the
    /// alignment, so every frame goes through the page cache, byte-identical.
    func testDataOffsetFramesGoThroughThePageCache() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128))
        let path = makeTemporaryDirectory(self) + "/offset.raw"
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 3,
                                                    format: FormatOptions(pixelFormat: .yuyv, width: 640, height: 360), outputPath: path))
        XCTAssertEqual(summary.framesDirect, 0)
        XCTAssertEqual(summary.framesBuffered, 3)
        let expected = (0..<3).flatMap { patternBytes(sequence: UInt32($0), plane: 0, dataOffset: 128, count: 640 * 360 * 2) }
        XCTAssertEqual(readFile(path), expected)
    }

    /// `on` needs a regular file and the raw container; `--direct-io` other than auto needs -o.
    /// (A bad mode is the parser's usage error: CommandLineTests.)
    func testDirectIOOptionErrors() {
        func options(_ directIO: DirectIOMode, output: String? = "/tmp/framedump-direct-option.raw", container: OutputContainer = .raw) -> CaptureOptions {
            CaptureOptions(devicePath: simulatedPath, backend: makeBackend(), count: 1, outputPath: output, container: container, directIO: directIO)
        }
        let cases: [(CaptureOptions, String)] = [
            (options(.on, output: nil), "--direct-io on needs -o FILE"),
            (options(.off, output: nil), "--direct-io off needs -o FILE"),
            (options(.on, output: "-"), "--direct-io on needs -o FILE, a regular file (standard output is written through the page cache)"),
            (options(.on, container: .y4m), "--direct-io on needs --container raw (y4m frames start with a FRAME header, never aligned for O_DIRECT)"),
            (options(.on, output: "/dev/null"), "--direct-io on: -o /dev/null is not a regular file"),
        ]
        for (value, message) in cases {
            let error = expectFrameDumpError { () throws(FrameDumpError) in try value.validate() }
            XCTAssertEqual(error?.kind, .usage)
            XCTAssertEqual(error?.message, message)
        }
        XCTAssertNoThrow(try options(.off).validate())
        XCTAssertEqual(CaptureOptions(devicePath: simulatedPath, count: 1).directIO, .auto)
    }
}
