import FrameBridgeTestSupport
import Foundation
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `framedump capture --encode` / `--convert`: vivid into vicodec's encoder and into vim2m
/// through a ``MemoryToMemoryConnection``, in the VM booted with --m2m. The encoded stream is
/// decoded by vicodec's decoder through v4l2-ctl; the converted frames are checked against
/// v4l2-ctl's run of the same frame through vim2m.
///
/// vivid's colour bars with osd_text_mode=2 are the same picture in every frame, so frames of
/// two runs can be compared; each test checks that its raw frames are indeed all equal.
final class VividMemoryToMemoryConnectionTests: XCTestCase {
    let work = "/tmp/framedump-m2m-tests"
    static let frameBytes = 640 * 360 * 2

    override func setUpWithError() throws {
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    /// vivid's capture node in the --m2m boot.
    func vivid() throws -> String {
        _ = try M2M.node(M2M.encoder)
        let path = try XCTUnwrap(M2M.nodesByName().first { $0.key.hasPrefix("vivid-000-vid-cap") }?.value,
                                 "no vivid capture node among \(M2M.nodesByName())")
        return path
    }

    func camera() throws -> [String] {
        ["-d", try vivid(), "--input", "0", "--pixel-format", "YUYV", "--size", "640x360", "--fps", "30", "--set-ctrl", "osd_text_mode=2"]
    }

    func framedump(_ arguments: [String]) throws -> ChildProcess.Result {
        try ChildProcess.run(VividCLITests.framedump, arguments)
    }

    /// Encodes `count` frames with `options`; returns the JSON summary and the stream's records.
    func encode(_ name: String, count: Int, _ options: [String]) throws -> (summary: [String: Any], frames: [Data]) {
        let output = "\(work)/\(name).fwht"
        let result = try framedump(["capture"] + (try camera()) + ["-n", "\(count)", "--encode", try M2M.node(M2M.encoder), "-o", output, "--json"] + options)
        XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)")
        let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any], "\(name): \(result.stderr)")
        return (summary, try Self.records(of: Data(contentsOf: URL(fileURLWithPath: output))))
    }

    /// The buffers of a v4l2-ctl `--stream-to-hdr` file: per buffer 'Vhdr' and the plane's
    /// length (big endian), then its bytes. A malformed file fails the test.
    static func records(of data: Data) throws -> [Data] {
        var records: [Data] = []
        var offset = 0
        let bytes = [UInt8](data)
        func word(_ at: Int) -> UInt32 { bytes[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) } }
        while offset < bytes.count {
            guard offset + 8 <= bytes.count, Array(bytes[offset..<offset + 4]) == Array("rdhV".utf8) else {
                XCTFail("no Vhdr record at offset \(offset) of \(bytes.count)")
                break
            }
            let length = Int(word(offset + 4))
            guard offset + 8 + length <= bytes.count else {
                XCTFail("record at \(offset) claims \(length) bytes, past the end")
                break
            }
            records.append(Data(bytes[offset + 8..<offset + 8 + length]))
            offset += 8 + length
        }
        return records
    }

    static func connection(_ summary: [String: Any]) -> [String: Any] { summary["connection"] as? [String: Any] ?? [:] }
    static func result(_ summary: [String: Any]) -> [String: Any] { summary["result"] as? [String: Any] ?? [:] }

    /// PSNR in dB of two equally long byte strings (infinity when equal).
    static func psnr(_ a: Data, _ b: Data) -> Double {
        precondition(a.count == b.count)
        var squares = 0.0
        a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in
                for i in 0..<x.count {
                    let d = Double(x[i]) - Double(y[i])
                    squares += d * d
                }
            }
        }
        if squares == 0 { return .infinity }
        return 10 * log10(255 * 255 / (squares / Double(a.count)))
    }

    /// The raw frames of a plain capture with the same options, checked to be all equal.
    func rawFrame() throws -> Data {
        let raw = "\(work)/raw.yuv"
        let result = try framedump(["capture"] + (try camera()) + ["-n", "5", "-o", raw, "--quiet"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let data = try Data(contentsOf: URL(fileURLWithPath: raw))
        XCTAssertEqual(data.count, 5 * Self.frameBytes)
        let first = data.prefix(Self.frameBytes)
        for n in 1..<5 {
            XCTAssertTrue(data.subdata(in: n * Self.frameBytes..<(n + 1) * Self.frameBytes) == first, "vivid's frames differ: the comparison needs a still picture")
        }
        return Data(first)
    }

    /// The encoded stream decodes through vicodec's decoder (v4l2-ctl) to as many frames as were
    /// captured, each within the codec's loss of the raw frame; every encoded frame carries
    /// its captured frame's timestamp.
    func testEncodedStreamDecodesToEveryCapturedFrame() throws {
        let (summary, records) = try encode("auto", count: 30, [])
        let connection = Self.connection(summary), result = Self.result(summary)
        XCTAssertEqual(connection["chosen"] as? String, "capture-dmabuf", "\(connection)")
        XCTAssertEqual(summary["framesCaptured"] as? Int, 30)
        XCTAssertEqual(records.count, 30)
        XCTAssertEqual(result["frames"] as? Int, 30)
        XCTAssertEqual(result["timestampsMatched"] as? Int, 30, "\(result)")
        XCTAssertEqual(connection["framesReturned"] as? Int, 30)
        XCTAssertLessThanOrEqual(connection["framesInFlightMaximum"] as? Int ?? 99, 8)

        let decoded = "\(work)/decoded.yuv"
        let decoder = try M2M.node(M2M.decoder)
        // The decoder's CAPTURE format would be 422P (the stream says 4:2:2): YUYV is asked for.
        let ctl = try ChildProcess.run("/usr/bin/v4l2-ctl", ["-d", decoder, "-v", "pixelformat=YUYV", "--stream-from-hdr", "\(work)/auto.fwht",
                                                              "--stream-mmap", "--stream-out-mmap", "--stream-to", decoded])
        XCTAssertEqual(ctl.status, 0, ctl.stderr)
        let frames = try Data(contentsOf: URL(fileURLWithPath: decoded))
        // v4l2-ctl may write a trailing partial buffer: whole frames are counted.
        XCTAssertEqual(frames.count / Self.frameBytes, 30, "\(frames.count) bytes decoded")
        let raw = try rawFrame()
        var worst = Double.infinity
        for n in 0..<30 {
            let frame = frames.subdata(in: n * Self.frameBytes..<(n + 1) * Self.frameBytes)
            worst = min(worst, Self.psnr(frame, raw))
        }
        print("m2m: vivid -> vicodec -> v4l2-ctl's decode: 30 frames, worst PSNR \(worst) dB")
        XCTAssertGreaterThan(worst, 35, "a decoded frame is too far from the captured one")
    }

    /// The two dmabuf directions and the copy give the same encoded bytes.
    func testBothDMABufDirectionsAndTheCopyGiveTheSameBytes() throws {
        var streams: [String: [Data]] = [:]
        for kind in ["capture-dmabuf", "device-dmabuf", "copy"] {
            let (summary, records) = try encode(kind, count: 10, ["--connection", kind])
            let connection = Self.connection(summary)
            XCTAssertEqual(connection["chosen"] as? String, kind, "\(connection)")
            XCTAssertEqual(connection["zeroCopy"] as? Bool, kind != "copy")
            XCTAssertEqual(connection["framesCopied"] as? Int, kind == "copy" ? 10 : 0)
            let allocator = (summary["segments"] as? [[String: Any]])?.first?["allocator"] as? String ?? ""
            XCTAssertTrue(kind == "device-dmabuf" ? allocator.hasPrefix("dmabuf (") && allocator.hasSuffix("OUTPUT)") : allocator == "kernel-pool (mmap)",
                          "\(kind): the camera's allocator is \(allocator)")
            XCTAssertEqual(records.count, 10, kind)
            streams[kind] = records
        }
        XCTAssertEqual(streams["capture-dmabuf"], streams["device-dmabuf"])
        XCTAssertEqual(streams["capture-dmabuf"], streams["copy"])
    }

    /// A bytesperline the encoder does not take rejects both dmabuf kinds with that reason; the
    /// copy repacks the lines and the stream equals the unpadded one.
    func testAPaddedBytesPerLineFallsBackToALineByLineCopy() throws {
        let (plain, expected) = try encode("plain", count: 5, [])
        XCTAssertEqual(Self.connection(plain)["chosen"] as? String, "capture-dmabuf")
        let (summary, records) = try encode("padded", count: 5, ["--bytesperline", "1536"])
        XCTAssertEqual(summary["bytesPerLine"] as? Int, 1536)
        let connection = Self.connection(summary)
        XCTAssertEqual(connection["chosen"] as? String, "copy")
        let rejections = connection["rejections"] as? [[String: String]] ?? []
        XCTAssertEqual(rejections.map { $0["kind"] ?? "" }, ["capture-dmabuf", "device-dmabuf"])
        for rejection in rejections {
            XCTAssertTrue(rejection["reason"]?.contains("bytesperline 1536") == true && rejection["reason"]?.contains("1280") == true, "\(rejection)")
        }
        XCTAssertEqual(records, expected, "the copy did not repack the padded lines")

        // Asked for dmabuf only: an error with the reasons, and no file.
        let output = "\(work)/refused.fwht"
        let refused = try framedump(["capture"] + (try camera()) + ["-n", "5", "--bytesperline", "1536", "--encode", try M2M.node(M2M.encoder),
                                                                   "--connection", "dmabuf", "-o", output])
        XCTAssertEqual(refused.status, 1, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("bytesperline 1536"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }

    /// A capture held to USERPTR memory: its buffers cannot be exported and it does not import
    /// dmabufs, so both dmabuf kinds are rejected for their memory kind and the copy streams.
    func testUserMemoryRejectsBothDMABufKindsForTheirMemoryKind() throws {
        let (summary, records) = try encode("userptr", count: 5, ["--memory", "userptr"])
        let connection = Self.connection(summary)
        XCTAssertEqual(connection["chosen"] as? String, "copy")
        let reasons = (connection["rejections"] as? [[String: String]] ?? []).map { $0["reason"] ?? "" }
        XCTAssertEqual(reasons.count, 2, "\(connection)")
        XCTAssertTrue(reasons.first?.contains("EXPBUF exports MMAP buffers only") == true, "\(reasons)")
        XCTAssertTrue(reasons.last?.contains("importing needs DMABUF") == true, "\(reasons)")
        XCTAssertEqual(records.count, 5)
        let segment = try XCTUnwrap((summary["segments"] as? [[String: Any]])?.first)
        XCTAssertEqual(segment["allocator"] as? String, "user-pointer (userptr)", "the copy captured with --memory userptr")
    }

    /// The drain: with -n 100, 100 encoded frames, no fewer; the encoder found by its codec.
    func testDrainGivesEveryFrameAndTheEncoderIsFoundByCodec() throws {
        let output = "\(work)/hundred.fwht"
        let result = try framedump(["capture"] + (try camera()) + ["-n", "100", "--encode", "fwht", "-o", output, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any])
        XCTAssertEqual(Self.connection(summary)["device"] as? String, try M2M.node(M2M.encoder))
        XCTAssertEqual(try Self.records(of: Data(contentsOf: URL(fileURLWithPath: output))).count, 100)
        XCTAssertEqual(Self.result(summary)["frames"] as? Int, 100)
        XCTAssertEqual(Self.result(summary)["timestampsMatched"] as? Int, 100)
    }

    /// vim2m: RGB3 640x360 in, YUYV 320x180 out, equal to v4l2-ctl's run of the same frame
    /// through the driver.
    func testConverterScalesAsTheDriverDoesThroughV4L2Ctl() throws {
        let converter = try M2M.node(M2M.converter)
        let vivid = try vivid()
        let source = "\(work)/source.rgb"
        let capture = try framedump(["capture", "-d", vivid, "--input", "0", "--pixel-format", "RGB3", "--size", "640x360",
                                     "--set-ctrl", "osd_text_mode=2", "-n", "1", "-o", source, "--quiet"])
        XCTAssertEqual(capture.status, 0, capture.stderr)
        let reference = "\(work)/reference.yuv"
        let ctl = try ChildProcess.run("/usr/bin/v4l2-ctl", ["-d", converter, "-x", "width=640,height=360,pixelformat=RGB3",
                                                              "-v", "width=320,height=180,pixelformat=YUYV", "--stream-from", source,
                                                              "--stream-out-mmap", "--stream-mmap", "--stream-count", "1", "--stream-to", reference])
        XCTAssertEqual(ctl.status, 0, ctl.stderr)
        let expected = try Data(contentsOf: URL(fileURLWithPath: reference))
        let size = 320 * 180 * 2
        XCTAssertGreaterThanOrEqual(expected.count, size, "v4l2-ctl gave \(expected.count) bytes")

        let output = "\(work)/converted.yuv"
        let result = try framedump(["capture", "-d", vivid, "--input", "0", "--source-format", "RGB3", "--source-size", "640x360",
                                    "--set-ctrl", "osd_text_mode=2", "-n", "5", "--convert", converter, "--size", "320x180",
                                    "--pixel-format", "YUYV", "-o", output, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: result.stdout) as? [String: Any])
        XCTAssertEqual(summary["pixelFormat"] as? String, "RGB3")
        XCTAssertEqual(Self.connection(summary)["role"] as? String, "converter")
        XCTAssertEqual(Self.result(summary)["pixelFormat"] as? String, "YUYV")
        XCTAssertEqual(Self.result(summary)["width"] as? Int, 320)
        let frames = try Data(contentsOf: URL(fileURLWithPath: output))
        XCTAssertEqual(frames.count, 5 * size)
        for n in 0..<5 {
            XCTAssertTrue(frames.subdata(in: n * size..<(n + 1) * size) == expected.prefix(size), "converted frame \(n) differs from vim2m's through v4l2-ctl")
        }
    }

    /// An HDMI source change while encoding (1280x720 to 640x480): the encoder is drained and set
    /// up again, and each segment is a stream of its own that vicodec's decoder decodes to its
    /// frames at its size.
    func testAnHDMISourceChangeWhileEncodingGivesTwoDecodableSegments() throws {
        let encoder = try M2M.node(M2M.encoder), decoder = try M2M.node(M2M.decoder)
        let path = try vivid()
        let control = try VideoDevice(path: path)
        let hdmi = try XCTUnwrap(try control.inputs().first { $0.capabilityFlags.contains(.dvTimings) }, "\(path) has no HDMI input").index
        func menuIndex(_ prefix: String) throws -> Int64 {
            let menu = try XCTUnwrap(try control.control(named: "dv_timings"), "\(path) has no dv_timings control").menuItems
            return Int64(try XCTUnwrap(menu.first { $0.name.hasPrefix(prefix) }, "\(menu.map(\.name))").index)
        }
        func set(_ name: String, _ value: Int64) throws {
            let info = try XCTUnwrap(try control.control(named: name), "\(path) has no \(name) control")
            try control.setControlValue(info.id, value, type: info.type)
        }
        try control.selectInput(hdmi)
        try set("dv_timings_signal_mode", 4)
        try set("dv_timings", try menuIndex("1280x720p60"))
        try control.setDVTimings(try control.queryDVTimings())
        defer {
            try? set("dv_timings_signal_mode", 0)
            try? control.selectInput(0)
        }
        let output = "\(work)/hdmi.fwht"
        let child = try ChildProcess(VividCLITests.framedump, ["capture", "-d", path, "--input", String(hdmi), "--pixel-format", "YUYV",
                                                               "--set-ctrl", "osd_text_mode=2", "-n", "40", "--encode", encoder, "-o", output, "--json"])
        // Some encoded frames of the first format, then the change.
        let start = MonotonicClock.nanoseconds()
        while ((try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0) < 40_000 {
            guard MonotonicClock.nanoseconds() - start < 60_000_000_000 else { break }
            usleep(50_000)
        }
        try set("dv_timings", try menuIndex("640x480p59"))
        let run = child.wait()
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: run.stdout) as? [String: Any], run.stderr)
        let segments = try XCTUnwrap(summary["segments"] as? [[String: Any]], "\(summary)")
        XCTAssertEqual(segments.count, 2, "\(segments)")
        XCTAssertEqual(summary["sourceChangesFollowed"] as? Int, 1)
        XCTAssertEqual(summary["framesCaptured"] as? Int, 40)
        let sizes = segments.map { "\($0["width"] as? Int ?? 0)x\($0["height"] as? Int ?? 0)" }
        XCTAssertEqual(sizes, ["1280x720", "640x480"])
        var decodedTotal = 0
        for (k, segment) in segments.enumerated() {
            let file = try XCTUnwrap(segment["output"] as? String)
            XCTAssertEqual(file, k == 0 ? output : "\(work)/hdmi-seg1.fwht")
            let frames = segment["framesCaptured"] as? Int ?? -1
            XCTAssertGreaterThan(frames, 0, "segment \(k): \(segment)")
            XCTAssertEqual(segment["resultFrames"] as? Int, frames, "segment \(k): one encoded frame per captured frame")
            XCTAssertEqual(try Self.records(of: Data(contentsOf: URL(fileURLWithPath: file))).count, frames, "segment \(k)")
            let decoded = "\(work)/hdmi-\(k).yuv"
            let ctl = try ChildProcess.run("/usr/bin/v4l2-ctl", ["-d", decoder, "-v", "pixelformat=YUYV", "--stream-from-hdr", file,
                                                                  "--stream-mmap", "--stream-out-mmap", "--stream-to", decoded])
            XCTAssertEqual(ctl.status, 0, "segment \(k): \(ctl.stderr)")
            let frameBytes = (segment["width"] as? Int ?? 0) * (segment["height"] as? Int ?? 0) * 2
            let bytes = (try? FileManager.default.attributesOfItem(atPath: decoded)[.size] as? Int) ?? 0
            XCTAssertEqual(bytes / max(frameBytes, 1), frames, "segment \(k): \(bytes) bytes decoded at \(sizes[k])")
            decodedTotal += bytes / max(frameBytes, 1)
        }
        print("m2m: HDMI change while encoding: segments \(sizes), \(segments.map { $0["framesCaptured"] as? Int ?? 0 }) frames, \(decodedTotal) decoded")
    }
}
