import CFrameDump
import CTurboJPEG
import CV4L2
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

/// framedump on the simulator's MJPEG camera: raw, --jpeg-dir, PNG and y4m outputs, the
/// corrupt-frame policy and its counters, info and framing.
final class MJPEGCaptureTests: XCTestCase {
    private func camera(_ mjpeg: SimulatedMJPEG = SimulatedMJPEG(variants: 3), production: SimulatedFrameProduction = .onDemand)
        -> SimulatedV4L2Backend {
        makeBackend(SimulatedDeviceConfiguration(production: production, mjpeg: mjpeg))
    }

    private func options(_ backend: SimulatedV4L2Backend, count: Int, output: String? = nil, container: OutputContainer = .raw,
                         png: String? = nil, jpeg: String? = nil, every: Int = 1, policy: CorruptFramePolicy = .skip,
                         width: UInt32 = 320, height: UInt32 = 180) -> CaptureOptions {
        CaptureOptions(devicePath: simulatedPath, backend: backend, count: count,
                       format: FormatOptions(pixelFormat: .mjpeg, width: width, height: height), outputPath: output,
                       container: container, pngDirectory: png, pngEvery: every, frameTimeoutSeconds: 1,
                       corruptFramePolicy: policy, jpegDirectory: jpeg)
    }

    private func picture(_ variant: Int, subsampling: Int32 = 2, width: Int = 320, height: Int = 180) -> [UInt8] {
        SimulatedJPEG.encode(width: width, height: height, variant: variant, subsampling: subsampling, quality: 85)!
    }

    /// TurboJPEG's planar decode (rows unpadded), the reference for y4m frames.
    private func referenceYUV(_ jpeg: [UInt8], width: Int, height: Int, subsampling: Int32) -> [UInt8] {
        let handle = tjInitDecompress()!
        defer { tjDestroy(handle) }
        var out = [UInt8](repeating: 0, count: Int(tjBufSizeYUV2(Int32(width), 1, Int32(height), subsampling)))
        let result = jpeg.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer {
                tjDecompressToYUV2(handle, source.baseAddress, UInt(source.count), $0.baseAddress, Int32(width), 1, Int32(height), 0)
            }
        }
        XCTAssertEqual(result, 0)
        return out
    }

    /// TurboJPEG's RGB decode, the reference for PNG pictures.
    private func referenceRGB(_ jpeg: [UInt8], width: Int, height: Int) -> [UInt8] {
        let handle = tjInitDecompress()!
        defer { tjDestroy(handle) }
        var out = [UInt8](repeating: 0, count: width * height * 3)
        let result = jpeg.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer {
                tjDecompress2(handle, source.baseAddress, UInt(source.count), $0.baseAddress, Int32(width), Int32(width * 3),
                              Int32(height), Int32(TJPF_RGB.rawValue), TJFLAG_ACCURATEDCT)
            }
        }
        XCTAssertEqual(result, 0)
        return out
    }

    private func readPNG(_ path: String) -> (width: Int, height: Int, rgb: [UInt8])? {
        var rgb = [UInt8](repeating: 0, count: 4096 * 4096 * 3 / 16)
        var width: UInt32 = 0, height: UInt32 = 0
        let result = rgb.withUnsafeMutableBufferPointer { cframedump_read_png_rgb24(path, $0.baseAddress, $0.count, &width, &height) }
        guard result == 0 else { return nil }
        return (Int(width), Int(height), Array(rgb.prefix(Int(width * height * 3))))
    }

    private func directoryNames(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    // MARK: - Raw

    func testRawIsThePayloadsConcatenated() throws {
        let backend = camera()
        let path = makeTemporaryDirectory(self) + "/out.mjpeg"
        let summary = try runCapture(options(backend, count: 7, output: path))
        XCTAssertEqual(summary.framesWritten, 7)
        let expected = (0..<7).flatMap { picture($0 % 3) }
        XCTAssertEqual(readFile(path), expected, "frame n is variant n % 3, bytesused bytes each")
        XCTAssertEqual(summary.bytesWritten, expected.count)
        XCTAssertEqual(summary.pixelFormat, "MJPG")
        XCTAssertEqual(summary.compressed?.corruptSkipped, 0)
    }

    // MARK: - --jpeg-dir

    func testJPEGDirectoryWritesEveryNthFrameWhole() throws {
        let backend = camera()
        let directory = makeTemporaryDirectory(self) + "/jpegs"
        let summary = try runCapture(options(backend, count: 7, jpeg: directory, every: 3))
        XCTAssertEqual(summary.compressed?.jpegFilesWritten, 3)
        XCTAssertEqual(directoryNames(directory), ["frame-000000.jpg", "frame-000003.jpg", "frame-000006.jpg"], "no temporary files left")
        for index in [0, 3, 6] {
            XCTAssertEqual(readFile(directory + "/" + JPEGSink.fileName(index: index)), picture(index % 3), "frame \(index)")
        }
    }

    func testJPEGFileIsWrittenWholeOrNotAtAll() throws {
        // A file-size limit below one JPEG makes the write fail part-way (EFBIG), as a full disk would.
        let backend = camera(SimulatedMJPEG(variants: 1))
        let directory = makeTemporaryDirectory(self) + "/jpegs"
        let size = picture(0).count
        var saved = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        let previous = signal(SIGXFSZ, SIG_IGN)
        // After frame 0 (the buffers exist by then: the limit would also stop their memfds).
        let error = expectFrameDumpError { () throws(FrameDumpError) in
            try runCapture(options(backend, count: 3, jpeg: directory, every: 2)) { written in
                guard written == 1 else { return }
                var limit = saved
                limit.rlim_cur = rlim_t(size / 2)
                XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit), 0)
            }
        }
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        signal(SIGXFSZ, previous)
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertTrue(error?.message.contains("--jpeg-dir") ?? false, error?.message ?? "")
        XCTAssertTrue(error?.message.contains("EFBIG") ?? false, error?.message ?? "")
        XCTAssertEqual(directoryNames(directory), ["frame-000000.jpg"], "neither a partial frame-000002.jpg nor its temporary file")
        XCTAssertEqual(readFile(directory + "/frame-000000.jpg"), picture(0), "the file written before stays whole")
    }

    func testJPEGDirectoryNeedsAJPEGFormat() {
        let backend = camera()
        let directory = makeTemporaryDirectory(self) + "/jpegs"
        var wrong = options(backend, count: 1, jpeg: directory)
        wrong.format.pixelFormat = .yuyv
        let error = expectFrameDumpError { () throws(FrameDumpError) in try runCapture(wrong) }
        XCTAssertEqual(error?.exitCode, 2)
        XCTAssertTrue(error?.message.contains("--jpeg-dir: pixel format YUYV is not JPEG") ?? false, error?.message ?? "")
    }

    // MARK: - PNG

    func testPNGsAreTheDecodedJPEGs() throws {
        let backend = camera()
        let directory = makeTemporaryDirectory(self) + "/pngs"
        let summary = try runCapture(options(backend, count: 4, png: directory, every: 2))
        XCTAssertEqual(summary.pngFilesWritten, 2)
        XCTAssertEqual(directoryNames(directory), ["frame-000000.png", "frame-000002.png"])
        for index in [0, 2] {
            let png = try XCTUnwrap(readPNG(directory + "/" + PNGSink.fileName(index: index)), "frame \(index) reads back")
            XCTAssertEqual(png.width, 320)
            XCTAssertEqual(png.height, 180)
            XCTAssertEqual(png.rgb, referenceRGB(picture(index % 3), width: 320, height: 180), "frame \(index)")
        }
    }

    // MARK: - y4m

    private func parseY4M(_ bytes: [UInt8]) -> (header: String, frames: [[UInt8]])? {
        guard let newline = bytes.firstIndex(of: 0x0A) else { return nil }
        let header = String(decoding: bytes[..<newline], as: UTF8.self)
        var fields: [Character: String] = [:]
        for field in header.split(separator: " ").dropFirst() { fields[field.first!] = String(field.dropFirst()) }
        guard let width = Int(fields["W"] ?? ""), let height = Int(fields["H"] ?? "") else { return nil }
        let frameSize: Int
        switch fields["C"] {
        case "420jpeg": frameSize = width * height + 2 * ((width + 1) / 2) * ((height + 1) / 2)
        case "422": frameSize = width * height + 2 * ((width + 1) / 2) * height
        default: return nil
        }
        var frames: [[UInt8]] = []
        var offset = newline + 1
        while offset < bytes.count {
            guard bytes.count >= offset + 6 + frameSize, Array(bytes[offset..<(offset + 6)]) == Array("FRAME\n".utf8) else { return nil }
            frames.append(Array(bytes[(offset + 6)..<(offset + 6 + frameSize)]))
            offset += 6 + frameSize
        }
        return (header, frames)
    }

    func testY4MTakesTheChromaLayoutFromTheJPEG() throws {
        for (subsampling, tag) in [(Int32(2), "C420jpeg"), (1, "C422")] {
            let backend = camera(SimulatedMJPEG(subsampling: subsampling, variants: 3))
            let path = makeTemporaryDirectory(self) + "/out.y4m"
            let summary = try runCapture(options(backend, count: 4, output: path, container: .y4m))
            XCTAssertEqual(summary.framesWritten, 4)
            let stream = try XCTUnwrap(parseY4M(readFile(path)), "a well-formed y4m stream")
            XCTAssertTrue(stream.header.hasPrefix("YUV4MPEG2 W320 H180 F30:1 Ip A1:1 \(tag)"), stream.header)
            XCTAssertEqual(stream.frames.count, 4)
            for (index, frame) in stream.frames.enumerated() {
                XCTAssertEqual(frame, referenceYUV(picture(index % 3, subsampling: subsampling), width: 320, height: 180,
                                                   subsampling: subsampling), "\(tag) frame \(index)")
            }
        }
    }

    func testY4MStopsWhenTheSubsamplingChanges() throws {
        let backend = camera(SimulatedMJPEG(variants: 1), production: .manual)
        let path = makeTemporaryDirectory(self) + "/out.y4m"
        // Frames 0 and 1 are 4:2:0, frame 2 is 4:2:2.
        XCTAssertTrue(backend.injectFault(.dropFrames(0), path: simulatedPath))
        XCTAssertTrue(backend.injectFault(.dropFrames(0), path: simulatedPath))
        XCTAssertTrue(backend.injectFault(.jpegSubsampling(1), path: simulatedPath))
        let session = CaptureSession(options: options(backend, count: 5, output: path, container: .y4m), stopFlag: StopFlag())
        produce(backend, frames: 40)
        let error = expectFrameDumpError { () throws(FrameDumpError) in try session.run() }
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertTrue(error?.message.contains("frame 2 is a 320x180 4:2:2 JPEG but the stream is 320x180 4:2:0") ?? false,
                      error?.message ?? "")
        let stream = try XCTUnwrap(parseY4M(readFile(path)), "the frames before the change are kept whole")
        XCTAssertEqual(stream.frames.count, 2)
        XCTAssertTrue(stream.header.contains("C420jpeg"))
    }

    func testUndecodableFramesAreCountedNotPictured() throws {
        let backend = camera(SimulatedMJPEG(variants: 1), production: .manual)
        let root = makeTemporaryDirectory(self)
        // Markers are sound, so validation passes it; the decoder refuses it.
        XCTAssertTrue(backend.injectFault(.dropFrames(0), path: simulatedPath))
        XCTAssertTrue(backend.injectFault(.undecodableJPEG, path: simulatedPath))
        let session = CaptureSession(options: options(backend, count: 3, output: root + "/out.y4m", container: .y4m,
                                                      png: root + "/pngs"), stopFlag: StopFlag())
        produce(backend, frames: 40)
        let summary = try session.run()
        XCTAssertEqual(summary.framesWritten, 3)
        XCTAssertEqual(summary.compressed?.framesNotDecoded, 1)
        XCTAssertTrue(summary.compressed?.lastDecodeError?.contains("frame 1") ?? false, summary.compressed?.lastDecodeError ?? "")
        XCTAssertEqual(summary.pngFilesWritten, 2)
        XCTAssertEqual(directoryNames(root + "/pngs"), ["frame-000000.png", "frame-000002.png"])
        XCTAssertEqual(parseY4M(readFile(root + "/out.y4m"))?.frames.count, 2)
        XCTAssertTrue(summary.render().contains("not decoded      : 1 frames"), summary.render())
    }

    func testY4MWithNoFrameDecodedIsAnError() throws {
        let backend = camera(SimulatedMJPEG(variants: 1), production: .manual)
        let root = makeTemporaryDirectory(self)
        // Both frames pass marker validation and neither decodes: there is no layout for a header.
        XCTAssertTrue(backend.injectFault(.undecodableJPEG, path: simulatedPath))
        XCTAssertTrue(backend.injectFault(.undecodableJPEG, path: simulatedPath))
        let session = CaptureSession(options: options(backend, count: 2, output: root + "/out.y4m", container: .y4m),
                                     stopFlag: StopFlag())
        produce(backend, frames: 40)
        let error = expectFrameDumpError { () throws(FrameDumpError) in try session.run() }
        XCTAssertEqual(error?.exitCode, 1)
        XCTAssertTrue(error?.message.contains("none of the 2 frames could be decoded") ?? false, error?.message ?? "")
        XCTAssertTrue(error?.message.contains("--jpeg-dir") ?? false, error?.message ?? "")
        XCTAssertEqual(error?.summary?.compressed?.framesNotDecoded, 2)
        XCTAssertEqual(readFile(root + "/out.y4m").count, 0, "no header guessed")
    }

    /// A camera's frames, one every 5 ms, from a thread of their own while the session runs.
    private func produce(_ backend: SimulatedV4L2Backend, frames: Int) {
        Thread {
            for _ in 0..<frames {
                _ = backend.produceFrames(path: simulatedPath, count: 1)
                usleep(5000)
            }
        }.start()
    }

    // MARK: - Corrupt frames

    private func corruptRun(_ policy: CorruptFramePolicy, output: String, png: String? = nil) throws -> CaptureSummary {
        let backend = camera(SimulatedMJPEG(variants: 3), production: .manual)
        let faults: [SimulatedFault] = [.dropFrames(0), .truncatedJPEG, .missingSOI]
        for fault in faults { XCTAssertTrue(backend.injectFault(fault, path: simulatedPath)) }
        let session = CaptureSession(options: options(backend, count: policy == .skip ? 3 : 5, output: output, png: png, policy: policy),
                                     stopFlag: StopFlag())
        produce(backend, frames: 60)
        return try session.run()
    }

    func testCorruptFramesAreSkippedByDefaultAndCounted() throws {
        let path = makeTemporaryDirectory(self) + "/out.mjpeg"
        let summary = try corruptRun(.skip, output: path)
        let compressed = try XCTUnwrap(summary.compressed)
        XCTAssertEqual(compressed.corruptFrames, "skip")
        XCTAssertEqual(compressed.corruptTruncated, 1)
        XCTAssertEqual(compressed.corruptMissingSOI, 1)
        XCTAssertEqual(compressed.corruptEmpty, 0)
        XCTAssertEqual(compressed.corruptSkipped, 2)
        XCTAssertEqual(compressed.corruptDelivered, 0)
        // Sequences 1 and 2 were skipped: the stream is frames 0, 3, 4.
        XCTAssertEqual(readFile(path), picture(0) + picture(0) + picture(1))
        let json = summary.json()
        for key in ["\"corruptTruncated\" : 1", "\"corruptMissingSOI\" : 1", "\"corruptSkipped\" : 2", "\"corruptFrames\" : \"skip\"",
                    "\"corruptEmpty\" : 0", "\"corruptBytesUsedOverLength\" : 0"] {
            XCTAssertTrue(json.contains(key), "\(key) in \(json)")
        }
        XCTAssertTrue(summary.render().contains("corrupt frames   : 2 skipped, 0 delivered"), summary.render())
    }

    func testDeliveredCorruptFramesAreWrittenRawButNotPictured() throws {
        let root = makeTemporaryDirectory(self)
        let summary = try corruptRun(.deliver, output: root + "/out.mjpeg", png: root + "/pngs")
        let compressed = try XCTUnwrap(summary.compressed)
        XCTAssertEqual(compressed.corruptDelivered, 2)
        XCTAssertEqual(compressed.corruptSkipped, 0)
        XCTAssertEqual(summary.framesWritten, 5)
        let missingSOI = [0, 0] + picture(2).dropFirst(2)
        XCTAssertEqual(readFile(root + "/out.mjpeg"), picture(0) + picture(1).prefix(picture(1).count / 2) + missingSOI
                       + picture(0) + picture(1), "raw is what the camera sent")
        XCTAssertEqual(compressed.framesNotDecoded, 2)
        XCTAssertEqual(directoryNames(root + "/pngs"), ["frame-000000.png", "frame-000003.png", "frame-000004.png"],
                       "no picture of a corrupt frame")
    }

    // MARK: - Options, info, framing

    func testCorruptFramesOption() throws {
        // --corrupt-frames' values and its default are the parser's (CommandLineTests); here the
        // checks across options.
        XCTAssertEqual(CaptureOptions(devicePath: simulatedPath, backend: camera(), count: 1).corruptFramePolicy, .skip, "skip is the default")
        XCTAssertNoThrow(try CaptureOptions(devicePath: simulatedPath, backend: camera(), count: 1, pngEvery: 2,
                                            corruptFramePolicy: .deliver, jpegDirectory: "/tmp").validate(), "--every goes with --jpeg-dir too")
        let lonely = expectFrameDumpError { () throws(FrameDumpError) in
            try CaptureOptions(devicePath: simulatedPath, backend: camera(), count: 1, pngEvery: 2).validate()
        }
        XCTAssertEqual(lonely?.message, "--every needs --png-dir DIR or --jpeg-dir DIR")
    }

    func testInfoAndFramingShowCompression() throws {
        let backend = camera()
        let report = try FrameDumpCommands.info(path: simulatedPath, backend: backend)
        XCTAssertEqual(report.formats.filter(\.compressed).map(\.pixelFormat), [.mjpeg])
        XCTAssertTrue(report.render().contains("'MJPG' (Motion-JPEG), compressed"), report.render())
        XCTAssertTrue(report.render().contains("'YUYV' (YUYV 4:2:2)\n"), report.render())
        XCTAssertTrue(FrameDumpJSON.encode(report).contains("\"compressed\" : true"))

        let framing = try FrameDumpCommands.framing(path: simulatedPath, backend: backend,
                                                    format: FormatOptions(pixelFormat: .mjpeg, width: 320, height: 180))
        let text = framing.render()
        XCTAssertTrue(text.contains("(compressed: frame sizes vary up to sizeimage)"), text)
        XCTAssertTrue(text.contains("frame size     : 0...115200 bytes"), text)
        XCTAssertTrue(text.contains("flags          : ") && text.contains("compressed\n"), text)
        let json = FrameDumpJSON.encode(framing)
        XCTAssertTrue(json.contains("\"isCompressed\" : true"), json)
        let plain = try FrameDumpCommands.framing(path: simulatedPath, backend: backend,
                                                  format: FormatOptions(pixelFormat: .yuyv, width: 320, height: 180))
        XCTAssertTrue(plain.render().contains("(uncompressed)"), plain.render())
        XCTAssertTrue(FrameDumpJSON.encode(plain).contains("\"isCompressed\" : false"))
    }
}
