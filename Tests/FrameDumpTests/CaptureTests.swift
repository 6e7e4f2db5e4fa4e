import FrameBridge
import FrameDump
import Foundation
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// VIDIOC_STREAMON = _IOW('V', 18, int).
let streamOnRequest: UInt = 0x4004_5612
/// VIDIOC_REQBUFS = _IOWR('V', 8, struct v4l2_requestbuffers).
let requestBuffersRequest: UInt = 0xC014_5608
/// VIDIOC_S_FMT = _IOWR('V', 5, struct v4l2_format).
let setFormatRequest: UInt = 0xC0D0_5605

final class CaptureTests: XCTestCase {
    // MARK: - Raw

    /// Checks that `bytes` holds `frames` frames whose planes carry the simulator's pattern.
    private func assertPatternFrames(_ bytes: [UInt8], frames: Int, planes: [(dataOffset: Int, payload: Int)],
                                     firstSequence: UInt32 = 0, file: StaticString = #filePath, line: UInt = #line) {
        let frameSize = planes.reduce(0) { $0 + $1.payload }
        XCTAssertEqual(bytes.count, frames * frameSize, "file size", file: file, line: line)
        guard bytes.count == frames * frameSize else { return }
        var position = 0
        for frame in 0..<frames {
            for (plane, layout) in planes.enumerated() {
                let expected = patternBytes(sequence: firstSequence + UInt32(frame), plane: plane, dataOffset: layout.dataOffset,
                                            count: layout.payload)
                if Array(bytes[position..<(position + layout.payload)]) != expected {
                    XCTFail("frame \(frame) plane \(plane) differs from the simulator's pattern", file: file, line: line)
                    return
                }
                position += layout.payload
            }
        }
    }

    func testRawSinglePlanarFramesAreThePayloadBytes() throws {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/out.raw"
        let session = CaptureSession(options: CaptureOptions(devicePath: simulatedPath, backend: backend, count: 5, outputPath: path),
                                     stopFlag: StopFlag())
        let summary = try session.run()
        assertPatternFrames(readFile(path), frames: 5, planes: [(0, 640 * 360 * 2)])
        XCTAssertEqual(session.outputWriteCalls, 5, "one writev per frame")
        XCTAssertEqual(summary.framesWritten, 5)
        XCTAssertEqual(summary.framesRequested, 5)
        XCTAssertEqual(summary.bytesWritten, 5 * 640 * 360 * 2)
        XCTAssertEqual(summary.allocator, "kernel-pool (mmap)")
        XCTAssertEqual(summary.memory, "mmap")
        XCTAssertEqual(summary.backend, "simulator")
        XCTAssertEqual(summary.pixelFormat, "YUYV")
        XCTAssertEqual(summary.bufferType, "video-capture")
        XCTAssertFalse(summary.interrupted)
        XCTAssertEqual(summary.framesDropped, 0)
        XCTAssertGreaterThan(summary.buffers, 0)
        XCTAssertEqual(backend.queueState(path: simulatedPath)?.bufferCount ?? 0, 0, "buffers are freed at the end")
    }

    func testRawMultiplanarHonoursDataOffset() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128))
        let directory = makeTemporaryDirectory(self)
        // Two-plane NM12: plane 0 has the data_offset header, plane 1 none.
        let path = directory + "/nm12.raw"
        var format = FormatOptions()
        format.pixelFormat = .nv12m
        format.width = 320
        format.height = 180
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 4, format: format, outputPath: path))
        XCTAssertEqual(summary.bufferType, "video-capture-mplane")
        assertPatternFrames(readFile(path), frames: 4, planes: [(128, 320 * 180), (0, 320 * 180 / 2)])
        // Single-plane YUYV on the multi-planar queue.
        let yuyvPath = directory + "/yuyv.raw"
        _ = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 3,
                                          format: FormatOptions(pixelFormat: .yuyv, width: 640, height: 360), outputPath: yuyvPath))
        assertPatternFrames(readFile(yuyvPath), frames: 3, planes: [(128, 640 * 360 * 2)])
    }

    func testUserPointerAndDMABufFromAnotherDevice() throws {
        let backend = makeBackend()
        backend.addDevice(path: "/dev/video1")
        let directory = makeTemporaryDirectory(self)
        let userPath = directory + "/userptr.raw"
        let user = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 3, memory: .userPointer,
                                                 outputPath: userPath))
        XCTAssertEqual(user.allocator, "user-pointer (userptr)")
        assertPatternFrames(readFile(userPath), frames: 3, planes: [(0, 640 * 360 * 2)])

        let dmaPath = directory + "/dmabuf.raw"
        let dma = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 3, memory: .dmabuf,
                                                dmabufSource: .device("/dev/video1"), buffers: 4, outputPath: dmaPath))
        XCTAssertEqual(dma.allocator, "dmabuf (v4l2 /dev/video1)")
        XCTAssertEqual(dma.memory, "dmabuf")
        XCTAssertEqual(dma.buffers, 4)
        assertPatternFrames(readFile(dmaPath), frames: 3, planes: [(0, 640 * 360 * 2)])
    }

    /// With one buffer the leading edge holds the only frame: the pin must give it back when it
    /// advances, or it would never dequeue again.
    func testOneBufferCaptures() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(minimumBuffers: 1))
        let path = makeTemporaryDirectory(self) + "/one.raw"
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 5, buffers: 1,
                                                    outputPath: path, frameTimeoutSeconds: 2))
        XCTAssertEqual(summary.buffers, 1)
        XCTAssertEqual(summary.framesWritten, 5)
        assertPatternFrames(readFile(path), frames: 5, planes: [(0, 640 * 360 * 2)])
    }

    /// Every --buffers count in the advertised range captures (a count below the device's minimum is raised to it).
    func testEveryBufferCountInTheAdvertisedRangeWorks() throws {
        XCTAssertEqual(AllocatorPlan.bufferRange, 1...32)
        // The simulator's minimum is 3: a smaller count is raised to it, as the driver would.
        let backend = makeBackend(SimulatedDeviceConfiguration(minimumBuffers: 3))
        for buffers in [AllocatorPlan.bufferRange.lowerBound, 2, AllocatorPlan.bufferRange.upperBound] {
            let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 2, buffers: buffers))
            XCTAssertEqual(summary.framesWritten, 2)
            XCTAssertEqual(summary.buffers, max(buffers, 3), "--buffers \(buffers)")
        }
        // The parser of --buffers takes the same range (CommandLineTests: exit 2 naming the option).
        for good in [AllocatorPlan.bufferRange.lowerBound, AllocatorPlan.bufferRange.upperBound] {
            XCTAssertEqual(try OptionValues.bufferCount(String(good)), good)
        }
        for bad in [AllocatorPlan.bufferRange.lowerBound - 1, AllocatorPlan.bufferRange.upperBound + 1] {
            let error = expectOptionValueError { () throws(OptionValueError) in try OptionValues.bufferCount(String(bad)) }
            XCTAssertEqual(error?.message, "expected a buffer count in 1...32, such as 4")
        }
    }

    func testStandardOutputStream() throws {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/stdout.raw"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        defer { close(fd) }
        let session = CaptureSession(options: CaptureOptions(devicePath: simulatedPath, backend: backend, count: 2, outputPath: "-"),
                                     stopFlag: StopFlag())
        session.standardOutputDescriptor = fd
        let summary = try session.run()
        XCTAssertEqual(summary.output, "-")
        assertPatternFrames(readFile(path), frames: 2, planes: [(0, 640 * 360 * 2)])
    }

    // MARK: - YUV4MPEG2

    func testY4MHeaderAndYUYVConversion() throws {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/out.y4m"
        var format = FormatOptions()
        format.width = 320
        format.height = 180
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 2, format: format,
                                                    outputPath: path, container: .y4m))
        let bytes = readFile(path)
        let header = "YUV4MPEG2 W320 H180 F30:1 Ip A1:1 C422\n"
        XCTAssertEqual(String(decoding: bytes.prefix(header.utf8.count), as: UTF8.self), header)
        let frameSize = 320 * 180 * 2
        XCTAssertEqual(bytes.count, header.utf8.count + 2 * (6 + frameSize))
        XCTAssertEqual(summary.bytesWritten, bytes.count)
        XCTAssertEqual(summary.container, "y4m")
        for frame in 0..<2 {
            let start = header.utf8.count + frame * (6 + frameSize)
            XCTAssertEqual(String(decoding: bytes[start..<(start + 6)], as: UTF8.self), "FRAME\n")
            let source = patternBytes(sequence: UInt32(frame), plane: 0, dataOffset: 0, count: frameSize)
            let y = start + 6
            let u = y + 320 * 180
            let v = u + 160 * 180
            for (row, column) in [(0, 0), (0, 1), (0, 318), (0, 319), (7, 33), (179, 200), (179, 319)] {
                let pixel = row * 640 + column * 2
                XCTAssertEqual(bytes[y + row * 320 + column], source[pixel], "Y(\(row),\(column))")
                let pair = row * 640 + (column / 2) * 4
                XCTAssertEqual(bytes[u + row * 160 + column / 2], source[pair + 1], "U(\(row),\(column))")
                XCTAssertEqual(bytes[v + row * 160 + column / 2], source[pair + 3], "V(\(row),\(column))")
            }
        }
    }

    func testY4MFromMultiplanarNM12WithDataOffset() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128,
                                                               frameIntervals: [Fraction(1001, 30000)]))
        let path = makeTemporaryDirectory(self) + "/nm12.y4m"
        var format = FormatOptions()
        format.pixelFormat = .nv12m
        format.width = 320
        format.height = 180
        _ = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1, format: format,
                                          outputPath: path, container: .y4m))
        let bytes = readFile(path)
        let header = "YUV4MPEG2 W320 H180 F30000:1001 Ip A1:1 C420jpeg\n"
        XCTAssertEqual(String(decoding: bytes.prefix(header.utf8.count), as: UTF8.self), header)
        let y = header.utf8.count + 6
        let luma = 320 * 180
        let chroma = 160 * 90
        XCTAssertEqual(bytes.count, y + luma + 2 * chroma)
        let sourceY = patternBytes(sequence: 0, plane: 0, dataOffset: 128, count: luma)
        let sourceUV = patternBytes(sequence: 0, plane: 1, dataOffset: 0, count: luma / 2)
        XCTAssertEqual(Array(bytes[y..<(y + luma)]), sourceY)
        for i in [0, 1, 159, 160, 5000, chroma - 1] {
            XCTAssertEqual(bytes[y + luma + i], sourceUV[2 * i], "U[\(i)]")
            XCTAssertEqual(bytes[y + luma + chroma + i], sourceUV[2 * i + 1], "V[\(i)]")
        }
    }

    func testY4MUnsupportedPixelFormatFailsBeforeStreaming() {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/rgb.y4m"
        var format = FormatOptions()
        format.pixelFormat = .rgb24
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 2, format: format,
                                          outputPath: path, container: .y4m))
        }
        XCTAssertTrue(error?.message.hasPrefix("--container y4m: pixel format RGB3 cannot be written as YUV4MPEG2; supported: YUYV") ?? false,
                      error?.message ?? "")
        XCTAssertEqual(error?.exitCode, 2)
        XCTAssertFalse(fileExists(path), "nothing is written")
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: streamOnRequest), 0, "streaming never started")
    }

    /// A driver whose frames are shorter than its format says (found only at frame 0): the
    /// header goes out with the first frame, so nothing is written and no file is left.
    func testY4MFirstFrameShorterThanTheLayoutLeavesNoFile() throws {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/out.y4m"
        var format = FormatOptions()
        format.pixelFormat = .nv12
        format.width = 640
        format.height = 360
        XCTAssertTrue(backend.injectFault(.shortPayload(bytes: 362), path: simulatedPath))
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 2, format: format,
                                          outputPath: path, container: .y4m))
        }
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertTrue(error?.message.hasPrefix("y4m: plane 0 of a NV12 640x360 frame has 345238 bytes") ?? false, error?.message ?? "")
        XCTAssertFalse(fileExists(path), "no header-only file")
        // Without the fault the header and frames are there.
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: makeBackend(), count: 2, format: format,
                                                    outputPath: path, container: .y4m))
        XCTAssertEqual(summary.framesWritten, 2)
        XCTAssertTrue(String(decoding: readFile(path).prefix(9), as: UTF8.self) == "YUV4MPEG2")
        XCTAssertEqual(readFile(path).count, "YUV4MPEG2 W640 H360 F30:1 Ip A1:1 C420jpeg\n".utf8.count + 2 * (6 + 640 * 360 * 3 / 2))
    }

    // MARK: - PNG

    /// The width and height of a PNG's IHDR, after checking the signature.
    private func pngSize(_ path: String, file: StaticString = #filePath, line: UInt = #line) -> (width: Int, height: Int)? {
        let bytes = readFile(path)
        guard bytes.count > 33 else {
            XCTFail("\(path): \(bytes.count) bytes, not a PNG", file: file, line: line)
            return nil
        }
        XCTAssertEqual(Array(bytes[0..<8]), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "PNG signature", file: file, line: line)
        XCTAssertEqual(String(decoding: bytes[12..<16], as: UTF8.self), "IHDR", file: file, line: line)
        func word(_ offset: Int) -> Int { bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) } }
        XCTAssertEqual(bytes[24], 8, "bit depth", file: file, line: line)
        XCTAssertEqual(bytes[25], 2, "colour type RGB", file: file, line: line)
        return (word(16), word(20))
    }

    func testPNGOfEveryFrame() throws {
        let backend = makeBackend()
        let directory = makeTemporaryDirectory(self) + "/pictures"
        var format = FormatOptions()
        format.width = 320
        format.height = 180
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 3, format: format,
                                                    pngDirectory: directory))
        XCTAssertEqual(summary.pngFilesWritten, 3)
        XCTAssertNil(summary.output)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        XCTAssertEqual(names, ["frame-000000.png", "frame-000001.png", "frame-000002.png"])
        for name in names {
            let size = pngSize(directory + "/" + name)
            XCTAssertEqual(size?.width, 320)
            XCTAssertEqual(size?.height, 180)
        }
    }

    func testPNGEveryNthFrameFromMultiplanarNM12() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(multiplanar: true, dataOffset: 128))
        let directory = makeTemporaryDirectory(self)
        var format = FormatOptions()
        format.pixelFormat = .nv12m
        format.width = 640
        format.height = 480
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 7, format: format,
                                                    pngDirectory: directory, pngEvery: 3))
        XCTAssertEqual(summary.pngFilesWritten, 3)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        XCTAssertEqual(names, ["frame-000000.png", "frame-000003.png", "frame-000006.png"])
        let size = pngSize(directory + "/frame-000003.png")
        XCTAssertEqual(size?.width, 640)
        XCTAssertEqual(size?.height, 480)
    }

    func testPNGFileNames() {
        XCTAssertEqual(PNGSink.fileName(index: 0), "frame-000000.png")
        XCTAssertEqual(PNGSink.fileName(index: 42), "frame-000042.png")
        XCTAssertEqual(PNGSink.fileName(index: 1234567), "frame-1234567.png")
    }

    private func format(_ fourcc: String, _ width: UInt32, _ height: UInt32, bytesPerLine: UInt32? = nil, bytesPerPixel: UInt32 = 2,
                        colorspace: UInt32 = 8, encoding: UInt32 = 0, quantization: UInt32 = 0) -> ImageFormat {
        ImageFormat(bufferType: .videoCapture, width: width, height: height, pixelFormat: FourCC(fourcc)!, field: 1,
                    colorspace: colorspace, planes: [PlaneFormat(bytesPerLine: bytesPerLine ?? width * bytesPerPixel, sizeImage: (bytesPerLine ?? width * bytesPerPixel) * height * 2)],
                    ycbcrEncoding: encoding, quantization: quantization)
    }

    /// libswscale converts what libv4lconvert got wrong (odd sizes, real line lengths, BT.709,
    /// full-range YCbCr, limited-range RGB, HSV by its hsv_enc, NV24, AYUV); only what cannot
    /// be right is refused, naming the format and --png-dir.
    func testPNGAcceptsWhatSwscaleConvertsAndRefusesTheRest() {
        let accepted = [
            format("YUYV", 641, 361, bytesPerLine: 1282), format("NV12", 641, 361, bytesPerPixel: 1),
            format("NV12", 640, 360, bytesPerLine: 704), format("UYVY", 640, 360, colorspace: 3),
            format("YUYV", 640, 360, encoding: 2), format("YUYV", 640, 360, quantization: 1),
            format("RGB3", 640, 360, bytesPerPixel: 3, quantization: 2), format("HSV3", 640, 360, bytesPerPixel: 3, encoding: 129),
            format("HSV4", 640, 360, bytesPerPixel: 4, encoding: 128), format("AYUV", 640, 360, bytesPerPixel: 4),
            format("NV24", 640, 360, bytesPerPixel: 1), format("422P", 640, 360, bytesPerPixel: 1), format("NV21", 640, 360, bytesPerPixel: 1),
            format("Y10", 640, 360), format("GREY", 641, 361, bytesPerPixel: 1),
        ]
        for format in accepted {
            XCTAssertNoThrow(try PNGSink.checkFormat(format), "\(format.pixelFormat) \(format.width)x\(format.height)")
        }
        let refused: [(ImageFormat, String)] = [
            (format("HSV3", 640, 360, bytesPerPixel: 3, encoding: 0), "states no HSV encoding"),
            (format("YUYV", 640, 360, encoding: 7), "BT.2020 constant luminance"),
            (format("YUVP", 640, 360), "YUVP frames cannot be converted to a correct PNG"),
            (format("BG10", 640, 360), "BG10 frames cannot be converted to a correct PNG"),
            (format("BA81", 641, 361, bytesPerPixel: 1), "Bayer mosaic needs an even width and height"),
            (format("YUYV", 640, 360, bytesPerLine: 1000), "cannot hold 360 rows of 1280 bytes"),
        ]
        for (format, mention) in refused {
            let error = expectFrameDumpError { () throws(FrameDumpError) in try PNGSink.checkFormat(format) }
            XCTAssertEqual(error?.exitCode, 2, "\(format.pixelFormat)")
            XCTAssertTrue(error?.message.contains(mention) ?? false, "\(format.pixelFormat): \(error?.message ?? "")")
            XCTAssertTrue(error?.message.hasPrefix("--png-dir: ") ?? false, "\(format.pixelFormat): \(error?.message ?? "")")
            XCTAssertTrue(error?.message.contains(format.pixelFormat.description) ?? false, "\(error?.message ?? "")")
        }
    }

    /// A write that fails part-way (RLIMIT_FSIZE stands in for a full disk: the same short
    /// write, EFBIG instead of ENOSPC) leaves neither the picture nor its temporary file.
    func testPNGThatCannotBeWrittenLeavesNoFile() throws {
        let directory = makeTemporaryDirectory(self) + "/pictures"
        var format = FormatOptions()
        format.width = 320
        format.height = 180
        let options = CaptureOptions(devicePath: simulatedPath, backend: makeBackend(), count: 2, format: format,
                                     pngDirectory: directory)
        var saved = rlimit()
        XCTAssertEqual(getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved), 0)
        let previousHandler = signal(SIGXFSZ, SIG_IGN)
        // The limit comes after the first picture (the buffers, memfds in the simulator, are
        // made before streaming and must not hit it).
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(options, afterFrame: { written in
                guard written == 1 else { return }
                var limit = saved
                limit.rlim_cur = 1000
                setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit)
            })
        }
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved), 0)
        signal(SIGXFSZ, previousHandler)
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertTrue(error?.message.contains("frame-000001.png") ?? false, error?.message ?? "")
        XCTAssertTrue(error?.message.contains("File too large") ?? false, "the errno is named: \(error?.message ?? "")")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        XCTAssertEqual(names, ["frame-000000.png"], "no partial picture and no temporary file is left")
        XCTAssertGreaterThan(readFile(directory + "/frame-000000.png").count, 1000, "the first picture is whole")
    }

    // MARK: - Summary

    func testSummaryJSONRoundTrip() throws {
        let backend = makeBackend()
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 4))
        XCTAssertEqual(summary.framesWritten, 4)
        XCTAssertEqual(summary.bytesWritten, 0)
        let json = summary.json()
        for key in ["\"framesWritten\"", "\"framesDropped\"", "\"errorFrames\"", "\"framesSkipped\"", "\"driverViolations\"",
                    "\"averageFps\"", "\"cpuMicrosecondsPerFrame\"", "\"bytesWritten\"", "\"allocator\"", "\"interrupted\""] {
            XCTAssertTrue(json.contains(key), "missing \(key) in \(json)")
        }
        let decoded = try FrameDumpJSON.decode(CaptureSummary.self, from: json)
        XCTAssertEqual(decoded, summary)
        let text = summary.render()
        XCTAssertTrue(text.contains("frames written   : 4"), text)
        XCTAssertTrue(text.contains("interrupted      : no"), text)
        XCTAssertTrue(text.contains("kernel-pool (mmap)"), text)
    }

    func testDropsErrorFramesAndSkipsAreCounted() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .onDemand))
        let path = makeTemporaryDirectory(self) + "/faults.raw"
        var injected = false
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 6, outputPath: path)) { written in
            if written == 2 && !injected {
                injected = true
                _ = backend.injectFault(.dropFrames(3), path: simulatedPath)
                _ = backend.injectFault(.errorFlag, path: simulatedPath)
            }
        }
        XCTAssertEqual(summary.framesWritten, 6)
        XCTAssertEqual(summary.framesDropped, 3)
        XCTAssertEqual(summary.errorFrames, 1)
        XCTAssertEqual(summary.framesSkipped, 0)

        let skipping = makeBackend()
        _ = skipping.injectFault(.errorFlag, path: simulatedPath)
        let skipped = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: skipping, count: 3, errorFramePolicy: .skip))
        XCTAssertEqual(skipped.framesWritten, 3)
        XCTAssertEqual(skipped.errorFrames, 1)
        XCTAssertEqual(skipped.framesSkipped, 1)
    }

    // MARK: - Stopping

    func testStopFlagEndsCleanlyWithWholeFrames() throws {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/interrupted.raw"
        let stop = StopFlag()
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1000, outputPath: path),
                                     stopFlag: stop) { written in
            if written == 3 { stop.request() }
        }
        XCTAssertTrue(summary.interrupted)
        XCTAssertEqual(summary.framesWritten, 3)
        assertPatternFrames(readFile(path), frames: 3, planes: [(0, 640 * 360 * 2)])
        XCTAssertTrue(summary.render().contains("interrupted      : yes"))
    }

    func testStopRequestedWhileWaitingForAFrame() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .manual))
        let stop = StopFlag()
        let stopper = Thread {
            usleep(300_000)
            stop.request()
        }
        stopper.start()
        let started = DispatchTime.now()
        let summary = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 5, frameTimeoutSeconds: 30),
                                     stopFlag: stop)
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        XCTAssertTrue(summary.interrupted)
        XCTAssertEqual(summary.framesWritten, 0)
        print("capture: stop flag set at 0.3 s, capture returned at \(elapsed) s")
        XCTAssertLessThan(elapsed, 2, "the flag wakes the pin's wait (its eventfd); the wait itself would last the 30 s frame timeout")
    }

    func testNoFrameTimesOutNamingTheDevice() {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .manual))
        let path = makeTemporaryDirectory(self) + "/none.raw"
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 2, outputPath: path,
                                          frameTimeoutSeconds: 0.3))
        }
        XCTAssertTrue(error?.message.hasPrefix("/dev/video0: no frame arrived for 0.3 s") ?? false, error?.message ?? "")
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertEqual(error?.summary?.framesWritten, 0)
        XCTAssertEqual(readFile(path).count, 0)
    }

    func testFatalDriverErrorKeepsWholeFrames() {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/fatal.raw"
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 10, outputPath: path)) { written in
                if written == 2 { _ = backend.injectFault(.fatalError, path: simulatedPath) }
            }
        }
        XCTAssertTrue(error?.message.hasPrefix("/dev/video0: ") ?? false, error?.message ?? "")
        XCTAssertTrue(error?.message.contains("after 2 of 10 frames") ?? false, error?.message ?? "")
        XCTAssertEqual(error?.summary?.framesWritten, 2)
        assertPatternFrames(readFile(path), frames: 2, planes: [(0, 640 * 360 * 2)])
    }

    // MARK: - Errors before streaming

    func testUnknownControlNamesTheOptionAndDevice() {
        let backend = makeBackend()
        var format = FormatOptions()
        format.controls = [ControlSetting(name: "no_such_control", value: 1)]
        let path = makeTemporaryDirectory(self) + "/x.raw"
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1, format: format, outputPath: path))
        }
        XCTAssertEqual(error?.message, "--set-ctrl: /dev/video0 has no control named no_such_control (`framedump info -d /dev/video0` lists the controls)")
        XCTAssertEqual(error?.exitCode, 2)
        XCTAssertFalse(fileExists(path))
    }

    func testControlsAreSetBeforeStreaming() throws {
        let backend = makeBackend()
        let controls = try OptionValues.controls("osd_text_mode=2,brightness=200")
        _ = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1, format: FormatOptions(controls: controls)))
        XCTAssertEqual(backend.controlValue(path: simulatedPath, id: 0x00f0_f001), 2)
        XCTAssertEqual(backend.controlValue(path: simulatedPath, id: 0x0098_0900), 200)
        let outOfRange = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1,
                                          format: FormatOptions(controls: [ControlSetting(name: "brightness", value: 1000)])))
        }
        XCTAssertTrue(outOfRange?.message.hasPrefix("--set-ctrl: brightness=1000 is out of range") ?? false, outOfRange?.message ?? "")
    }

    /// --set-ctrl on a string control is a usage error naming the control and its type.
    func testSetControlOnAStringControlNamesItAndItsType() throws {
        let backend = makeBackend()
        let options = CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1,
                                     format: FormatOptions(controls: [ControlSetting(name: "string", value: 1)]))
        let error = expectFrameDumpError { () throws(FrameDumpError) in try runCapture(options) }
        XCTAssertEqual(error?.exitCode, 2)
        XCTAssertEqual(error?.message, "--set-ctrl: control string of /dev/video0 is a str control; framedump sets only integer, boolean, menu, bitmask and button controls (v4l2-ctl --set-ctrl sets str controls)")
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: streamOnRequest), 0)
        // The library says the same without the CLI's check.
        let device = try VideoDevice(path: simulatedPath, backend: backend)
        XCTAssertThrowsError(try CapturePin(device: device, configuration: PinConfiguration(controls: [(name: "string", value: 1)]))) { error in
            XCTAssertTrue("\(error)".contains("control string is a str control"), "\(error)")
        }
    }

    func testUnsupportedSizeAndFormatNameTheDevice() {
        let backend = makeBackend()
        let size = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1, format: FormatOptions(width: 123, height: 45)))
        }
        XCTAssertTrue(size?.message.hasPrefix("/dev/video0: VIDIOC_S_FMT: size 123x45 is not supported") ?? false, size?.message ?? "")
        XCTAssertEqual(size?.exitCode, 2)
        let pixel = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1, format: FormatOptions(pixelFormat: FourCC("MJPG")!)))
        }
        XCTAssertTrue(pixel?.message.hasPrefix("/dev/video0: pixel format MJPG is not offered") ?? false, pixel?.message ?? "")
        let missing = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: "/dev/video7", backend: backend, count: 1))
        }
        XCTAssertTrue(missing?.message.hasPrefix("/dev/video7: open failed: ENOENT") ?? false, missing?.message ?? "")
        XCTAssertEqual(missing?.exitCode, 1)
    }

    func testDMABufWithoutExporterIsAUsageError() {
        let backend = makeBackend()
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1, memory: .dmabuf))
        }
        XCTAssertTrue(error?.message.hasPrefix("--memory dmabuf needs --dmabuf-from") ?? false, error?.message ?? "")
        XCTAssertEqual(error?.exitCode, 2)
        XCTAssertEqual(backend.openDescriptorCount(path: simulatedPath), 0)
    }

    /// --libv4l2 takes mmap only: userptr and dmabuf are usage errors that name it.
    func testLibV4L2WithUserptrOrDmabufIsAUsageErrorNamingLibV4L2() {
        for memory in ["userptr", "dmabuf"] {
            let options = CaptureOptions(devicePath: simulatedPath, backend: LibV4L2Backend.shared, count: 1,
                                         memory: memory == "dmabuf" ? .dmabuf : .userPointer,
                                         dmabufSource: memory == "dmabuf" ? .vgem(nil) : nil)
            let error = expectFrameDumpError { () throws(FrameDumpError) in try options.validate() }
            XCTAssertEqual(error?.exitCode, 2, memory)
            XCTAssertTrue(error?.message.hasPrefix("--libv4l2 works only with --memory mmap") ?? false, error?.message ?? "")
            let framing = expectFrameDumpError { () throws(FrameDumpError) in
                try FrameDumpCommands.framing(path: simulatedPath, backend: LibV4L2Backend.shared,
                                              memory: memory == "dmabuf" ? .dmabuf : .userPointer)
            }
            XCTAssertEqual(framing?.exitCode, 2, memory)
        }
        XCTAssertNoThrow(try CaptureOptions(devicePath: simulatedPath, backend: LibV4L2Backend.shared, count: 1, memory: .mmap).validate())
    }

    func testRejectedAllocatorFailsWithTheReasonAndNoFallback() throws {
        let backend = makeBackend(SimulatedDeviceConfiguration(memoryKinds: [.mmap]))
        let path = makeTemporaryDirectory(self) + "/rejected.raw"
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1, memory: .userPointer, outputPath: path))
        }
        XCTAssertEqual(error?.message, "--memory userptr: /dev/video0: allocator user-pointer (userptr) was rejected: memory kind userptr is not supported by /dev/video0 (it supports mmap)")
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertFalse(fileExists(path))
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: streamOnRequest), 0, "no fall-back to mmap")

        // --buffers below the device's minimum is raised to it (issue 16 item 6), not a rejection.
        let few = makeBackend(SimulatedDeviceConfiguration(minimumBuffers: 3))
        let raised = try runCapture(CaptureOptions(devicePath: simulatedPath, backend: few, count: 1, buffers: 2))
        XCTAssertEqual(raised.buffers, 3)
    }

    /// A REQBUFS fault armed before the capture hits the capture's one real REQBUFS: nothing
    /// before it (pin set-up, framing) issues a REQBUFS that would swallow it.
    func testInjectedReqbufsFaultReachesTheRealRequest() throws {
        let backend = makeBackend()
        XCTAssertTrue(backend.injectFault(.failNext(request: requestBuffersRequest, errno: .invalidArgument), path: simulatedPath))
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1))
        }
        XCTAssertTrue(error?.message.contains("VIDIOC_REQBUFS") ?? false, error?.message ?? "")
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: streamOnRequest), 0)
        // Without the fault, pin set-up and framing issue no REQBUFS; start issues one.
        let clean = makeBackend()
        let device = try VideoDevice(path: simulatedPath, backend: clean)
        let pin = try CapturePin(device: device)
        _ = pin.framing
        XCTAssertEqual(clean.ioctlCount(path: simulatedPath, request: requestBuffersRequest), 0)
        try pin.start()
        XCTAssertEqual(clean.ioctlCount(path: simulatedPath, request: requestBuffersRequest), 1)
        pin.stop()
    }

    func testFailedStartLeavesNoFile() {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/never.raw"
        _ = backend.injectFault(.failNext(request: streamOnRequest, errno: .ioError), path: simulatedPath)
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1, outputPath: path))
        }
        XCTAssertTrue(error?.message.hasPrefix("/dev/video0: VIDIOC_STREAMON failed: EIO") ?? false, error?.message ?? "")
        XCTAssertFalse(fileExists(path), "the output is created only after streaming started")
    }

    func testUnwritableOutputIsRejectedBeforeStreaming() {
        let backend = makeBackend()
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 1, outputPath: "/nonexistent-dir/out.raw"))
        }
        XCTAssertTrue(error?.message.hasPrefix("-o /nonexistent-dir/out.raw: cannot create the file") ?? false, error?.message ?? "")
        XCTAssertEqual(backend.ioctlCount(path: simulatedPath, request: requestBuffersRequest), 0, "the device was not touched")
    }

    func testWriteFailureReportsThePath() {
        let backend = makeBackend()
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 3, outputPath: "/dev/full"))
        }
        XCTAssertTrue(error?.message.hasPrefix("/dev/full: write failed: ENOSPC") ?? false, error?.message ?? "")
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertEqual(error?.summary?.framesWritten, 0)
        XCTAssertEqual(backend.queueState(path: simulatedPath)?.isStreaming ?? false, false, "streaming stopped")
    }

    func testWriteFailureMidStreamKeepsWholeFrames() throws {
        let backend = makeBackend()
        let path = makeTemporaryDirectory(self) + "/limited.raw"
        let frameSize = 640 * 360 * 2
        let previousHandler = signal(SIGXFSZ, SIG_IGN)
        var previous = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &previous)
        var limit = rlimit(rlim_cur: rlim_t(frameSize * 3 + 1000), rlim_max: previous.rlim_max)
        setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit)
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(CaptureOptions(devicePath: simulatedPath, backend: backend, count: 6, outputPath: path))
        }
        setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &previous)
        signal(SIGXFSZ, previousHandler)
        XCTAssertTrue(error?.message.hasPrefix("\(path): write failed: EFBIG") ?? false, error?.message ?? "")
        XCTAssertEqual(error?.summary?.framesWritten, 3)
        assertPatternFrames(readFile(path), frames: 3, planes: [(0, frameSize)])
    }
}
