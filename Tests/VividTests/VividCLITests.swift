import Foundation
import FrameBridge
import V4L2
import FrameBridgeTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The framedump CLI against vivid, beside v4l2-ctl and ffmpeg: what a user runs.
final class VividCLITests: XCTestCase {
    typealias Run = ChildProcess.Result

    /// The framedump built next to this test bundle, or FRAMEBRIDGE_FRAMEDUMP (e.g. the release
    /// build, which links the Swift runtime statically: the CLI that gets installed).
    static var framedump: String {
        if let path = ProcessInfo.processInfo.environment["FRAMEBRIDGE_FRAMEDUMP"], !path.isEmpty { return path }
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        return bundle.appendingPathComponent("framedump").path
    }

    let work = "/tmp/framedump-cli-tests"

    override func setUpWithError() throws {
        _ = try Vivid.open()
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: Self.framedump), "framedump not built at \(Self.framedump)")
    }

    @discardableResult
    func run(_ executable: String, _ arguments: [String]) throws -> Run {
        try ChildProcess.run(executable, arguments)
    }

    func shell(_ command: String) throws -> Run { try run("/bin/sh", ["-c", command]) }

    private func framedump(_ arguments: [String]) throws -> Run {
        try run(Self.framedump, arguments)
    }

    let deterministic = ["-d", Vivid.main, "--input", "0", "--pixel-format", "YUYV", "--size", "640x360", "--fps", "30",
                         "--set-ctrl", "osd_text_mode=2", "--quiet"]

    /// framedump and v4l2-ctl write byte-identical raw files, for every memory kind.
    func testRawOutputIsByteIdenticalToV4L2CtlForEveryMemoryKind() throws {
        let card = try XCTUnwrap(FileManager.default.fileExists(atPath: "/dev/dri/card0") ? "vgem" : nil, "boot the VM with --vgem")
        let cases: [(String, [String])] = [
            ("mmap", ["--memory", "mmap"]),
            ("userptr", ["--memory", "userptr"]),
            ("dmabuf-video1", ["--memory", "dmabuf", "--dmabuf-from", Vivid.exporter]),
            ("dmabuf-vgem", ["--memory", "dmabuf", "--dmabuf-from", card]),
        ]
        var reference: Data?
        for (name, options) in cases {
            let output = "\(work)/\(name).raw"
            let result = try run(Self.framedump, ["capture"] + deterministic + ["-n", "30", "-o", output] + options)
            XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)")
            if reference == nil {
                let ctl = try run("/usr/bin/v4l2-ctl", ["-d", Vivid.main, "--stream-mmap", "--stream-count=30", "--stream-to=\(work)/v4l2-ctl.raw"])
                XCTAssertEqual(ctl.status, 0, ctl.stderr)
                reference = try Data(contentsOf: URL(fileURLWithPath: "\(work)/v4l2-ctl.raw"))
                XCTAssertEqual(reference?.count, 30 * 460_800)
            }
            let produced = try Data(contentsOf: URL(fileURLWithPath: output))
            XCTAssertEqual(produced.count, 30 * 460_800, name)
            XCTAssertTrue(produced == reference, "\(name): framedump's file differs from v4l2-ctl's")
            print("cli: --memory \(name): \(produced.count) bytes, identical to v4l2-ctl --stream-to")
        }
    }

    /// y4m on stdout decodes in ffmpeg back to the very bytes of the raw capture.
    func testY4MOnStdoutDecodesInFFmpeg() throws {
        let raw = "\(work)/frames.raw"
        XCTAssertEqual(try run(Self.framedump, ["capture"] + deterministic + ["-n", "10", "-o", raw]).status, 0)
        let decoded = "\(work)/decoded.raw"
        let pipeline = "\(Self.framedump) capture \(deterministic.joined(separator: " ")) -n 10 -o - --container y4m | ffmpeg -v error -y -f yuv4mpegpipe -i - -f rawvideo -pix_fmt yuyv422 \(decoded)"
        let result = try shell(pipeline)
        XCTAssertEqual(result.status, 0, result.stderr)
        let original = try Data(contentsOf: URL(fileURLWithPath: raw))
        let roundTrip = try Data(contentsOf: URL(fileURLWithPath: decoded))
        XCTAssertEqual(roundTrip.count, original.count)
        XCTAssertTrue(roundTrip == original, "ffmpeg's decoding of the y4m stream differs from the raw frames")
    }

    /// vivid's YU12 at 642x362 has 320-byte chroma lines where 321 are needed: its
    /// frames (bytesused 348244) are shorter than its sizeimage (348606), so it shows only at
    /// the first frame. Nothing is written and no file is left (the header goes with frame 0).
    func testY4MLayoutMismatchFailsBeforeWritingAnything() throws {
        let output = "\(work)/yu12.y4m"
        let result = try framedump(["capture", "-d", Vivid.main, "--input", "3", "--pixel-format", "YU12", "--size", "642x362",
                                    "-n", "3", "-o", output, "--container", "y4m", "--quiet"])
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("YU12 642x362 frame has 348244 bytes, expected at least 348606"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output), "no header-only file")
        print("newuser: y4m YU12 642x362: \(result.stderr.trimmingCharacters(in: .newlines))")
    }

    /// PNGs of vivid's colour bars: the eight 75% bars in order.
    func testPNGsShowTheColourBars() throws {
        let dir = "\(work)/png"
        let result = try run(Self.framedump, ["capture"] + deterministic + ["-n", "9", "--png-dir", dir, "--every", "4"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        XCTAssertEqual(files, ["frame-000000.png", "frame-000004.png", "frame-000008.png"])
        let rgb = try run("/usr/bin/ffmpeg", ["-v", "error", "-i", "\(dir)/frame-000004.png", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        XCTAssertEqual(rgb.status, 0, rgb.stderr)
        XCTAssertEqual(rgb.stdout.count, 640 * 360 * 3)
        let expected: [(Int, Int, Int)] = [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0),
                                           (191, 0, 191), (191, 0, 0), (0, 0, 191), (0, 0, 0)]
        let bytes = [UInt8](rgb.stdout)
        for (bar, colour) in expected.enumerated() {
            let x = bar * 80 + 40
            let offset = (180 * 640 + x) * 3
            let pixel = (Int(bytes[offset]), Int(bytes[offset + 1]), Int(bytes[offset + 2]))
            XCTAssertLessThan(abs(pixel.0 - colour.0) + abs(pixel.1 - colour.1) + abs(pixel.2 - colour.2), 3 * 30,
                              "bar \(bar): \(pixel), expected about \(colour)")
        }
    }

    func testListInfoAndFramingReportsParseAsJSON() throws {
        let list = try run(Self.framedump, ["list"])
        XCTAssertEqual(list.status, 0, list.stderr)
        XCTAssertTrue(list.text.contains(Vivid.main) && list.text.contains("vivid"), list.text)
        let info = try run(Self.framedump, ["info", "-d", Vivid.main, "--json"])
        XCTAssertEqual(info.status, 0, info.stderr)
        let infoJSON = try XCTUnwrap(try JSONSerialization.jsonObject(with: info.stdout) as? [String: Any])
        XCTAssertEqual((infoJSON["inputs"] as? [Any])?.count, 4, "\(infoJSON.keys)")
        let framing = try run(Self.framedump, ["framing", "-d", Vivid.main, "--input", "0", "--size", "640x360", "--pixel-format", "YUYV", "--memory", "userptr", "--json"])
        XCTAssertEqual(framing.status, 0, framing.stderr)
        let text = framing.text
        XCTAssertTrue(text.contains("\"frameSizeMinimum\"") && text.contains("userptr"), text)
        _ = try JSONSerialization.jsonObject(with: framing.stdout)
        if Vivid.multiplanarMode == 1 { XCTAssertTrue(text.contains("460800"), text) }
    }

    /// `framing` answers while another handle streams (no S_FMT, no REQBUFS).
    func testFramingWorksWhileAnotherProcessStreams() throws {
        let device = try Vivid.open()
        let pin = try CapturePin(device: device, configuration: Vivid.deterministic())
        try pin.start()
        defer { pin.stop() }
        XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)))
        let plain = try framedump(["framing", "-d", Vivid.main, "--json"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.text.contains("\"frameSizeMinimum\""), plain.text)
        let tried = try framedump(["framing", "-d", Vivid.main, "--pixel-format", "NV12", "--size", "320x180"])
        XCTAssertEqual(tried.status, 0, tried.stderr)
        XCTAssertTrue(tried.text.contains("NV12 320x180"), tried.text)
        XCTAssertTrue(try pin.advance(timeout: .milliseconds(10_000)), "the stream goes on")
        XCTAssertEqual(try device.format(pin.bufferType).pixelFormat, .yuyv, "the format in force is unchanged")
        print("newuser: framing while streaming: exit \(plain.status) and \(tried.status)")
    }

    /// Big-endian formats are listed in v4l2-ctl's spelling and can be typed back.
    func testBigEndianFormatNamesCanBeTypedBack() throws {
        let info = try framedump(["info", "-d", Vivid.main])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.text.contains("Y16 -BE"), info.text)
        XCTAssertFalse(info.text.contains("Y16?"), info.text)
        for spelling in ["Y16 -BE", "0xa0363159"] {
            let output = "\(work)/y16be.raw"
            let result = try framedump(["capture", "-d", Vivid.main, "--input", "0", "--size", "320x180", "--pixel-format", spelling,
                                        "-n", "1", "-o", output, "--quiet", "--json"])
            XCTAssertEqual(result.status, 0, "\(spelling): \(result.stderr)")
            XCTAssertTrue(result.text.contains("\"pixelFormat\" : \"Y16 -BE\"") || result.text.contains("\"pixelFormat\":\"Y16 -BE\""), result.text)
        }
    }

    /// Start-up: `list` and `info` allocate no buffers, and `capture` asks for its buffers once:
    /// no trial VIDIOC_REQBUFS (it would run the driver's queue_setup and take the queue), the
    /// only count-0 REQBUFS being the release after STREAMOFF. Seen by strace, not by our code.
    func testStartUpMakesNoTrialREQBUFS() throws {
        func ioctls(_ name: String, _ arguments: [String]) throws -> [String] {
            let log = "\(work)/strace-\(name).txt"
            let result = try run("/usr/bin/strace", ["-f", "-qq", "-e", "trace=ioctl", "-o", log, Self.framedump] + arguments)
            XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)")
            let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init)
            XCTAssertTrue(lines.contains { $0.contains("VIDIOC_QUERYCAP") }, "\(name): strace saw no VIDIOC_QUERYCAP: \(lines.prefix(5))")
            return lines
        }
        /// The count asked for by each VIDIOC_REQBUFS, in order, beside whether STREAMOFF came before it.
        func requests(_ lines: [String]) -> [(count: Int, afterStreamOff: Bool)] {
            var streamOff = false
            var found: [(Int, Bool)] = []
            for line in lines {
                if line.contains(", VIDIOC_STREAMOFF, ") { streamOff = true }
                guard line.contains(", VIDIOC_REQBUFS, ") else { continue }
                let count = line.range(of: "count=").map { Int(line[$0.upperBound...].prefix(while: \.isNumber)) ?? -1 } ?? -1
                found.append((count, streamOff))
            }
            return found
        }
        for (name, arguments) in [("list", ["list"]), ("info", ["info", "-d", Vivid.main])] {
            let asked = requests(try ioctls(name, arguments))
            XCTAssertTrue(asked.isEmpty, "\(name) issued VIDIOC_REQBUFS: \(asked.map(\.count))")
        }
        let capture = try ioctls("capture", ["capture"] + deterministic + ["-n", "1", "-o", "\(work)/one.raw"])
        let asked = requests(capture)
        XCTAssertEqual(asked.filter { $0.count > 0 }.count, 1, "capture asked for buffers more than once: \(asked.map(\.count))")
        XCTAssertGreaterThan(asked.first?.count ?? 0, 0, "capture's first VIDIOC_REQBUFS was not the real request: \(asked.map(\.count))")
        XCTAssertTrue(asked.allSatisfy { $0.count > 0 || $0.afterStreamOff }, "a count-0 VIDIOC_REQBUFS before STREAMOFF: \(asked)")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(work)/one.raw")).count, 460_800)
        print("cli: start-up VIDIOC_REQBUFS counts: list none, info none, capture \(asked.map(\.count))")
    }

    /// vivid's one-shot queue_setup fault reaches the real REQBUFS (no trial request swallows it).
    func testInjectedReqbufsErrorFailsTheCapture() throws {
        let result = try framedump(["capture", "-d", Vivid.main, "-n", "1", "--set-ctrl", "inject_vidioc_reqbufs_error=1", "--quiet"])
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("VIDIOC_REQBUFS"), result.stderr)
        let again = try framedump(["capture", "-d", Vivid.main, "-n", "1", "--quiet"])
        XCTAssertEqual(again.status, 0, "the fault was one-shot: \(again.stderr)")
    }

    /// The CLI does not load full Foundation (CoreFoundation, ICU, FoundationInternationalization):
    /// what it uses is in FoundationEssentials, and loading the rest costs every command.
    func testCLILoadsNoFullFoundation() throws {
        let ldd = try run("/usr/bin/ldd", [Self.framedump])
        XCTAssertEqual(ldd.status, 0, ldd.stderr)
        for library in ["libFoundation.so", "libFoundationInternationalization.so", "lib_FoundationICU.so", "libFoundationNetworking.so"] {
            XCTAssertFalse(ldd.text.contains(library), "\(Self.framedump) loads \(library):\n\(ldd.text)")
        }
        let libraries = ldd.text.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        print("cli: \(Self.framedump) loads \(libraries.joined(separator: " "))")
    }

    /// Bad input: one line naming what is wrong, a non-zero exit, no output file.
    func testBadInputGivesOneLineErrorsAndNonZeroExit() throws {
        var outputOnly: String?
        for index in 0..<10 {
            let path = "/dev/video\(index)"
            if let device = try? VideoDevice(path: path), !device.capabilities.canCapture { outputOnly = path }
        }
        let output = "\(work)/never.raw"
        let cases: [([String], String)] = [
            (["capture", "-d", "/dev/video99", "-n", "5", "-o", output], "/dev/video99"),
            (["capture", "-d", "/dev/null", "-n", "5", "-o", output], "/dev/null"),
            (["capture", "-d", Vivid.main, "-n", "0", "-o", output], "count"),
            (["capture", "-d", Vivid.main, "-n", "5", "--pixel-format", "ZZZZ", "-o", output], "ZZZZ"),
            (["capture", "-d", Vivid.main, "-n", "5", "--size", "12x", "-o", output], "--size"),
            (["capture", "-d", Vivid.main, "-n", "5", "--set-ctrl", "no_such_control=1", "-o", output], "no_such_control"),
            (["capture", "-d", Vivid.main, "-n", "5", "--buffers", "99", "-o", output], "--buffers"),
            (["capture", "-d", Vivid.main, "-n", "5", "-o", "/proc/no-such-dir/out.raw"], "/proc/no-such-dir/out.raw"),
            (["capture", "-d", Vivid.main, "-n", "5", "--memory", "dmabuf", "-o", output], "--dmabuf-from"),
        ] + (outputOnly.map { [(["capture", "-d", $0, "-n", "5", "-o", output], $0)] } ?? [])
        XCTAssertNotNil(outputOnly, "the VM should have an output-only vivid node (node_types 0x101)")
        for (arguments, mention) in cases {
            let result = try run(Self.framedump, arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments) succeeded")
            let lines = result.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("framedump: ") && result.stderr.contains(mention), "\(arguments): \(result.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: output), "\(arguments) left \(output)")
            print("cli: bad input \(arguments.dropFirst(3).joined(separator: " ")): exit \(result.status): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// vivid's string control is named with its type, exit 2.
    func testSetControlOnTheStringControlIsAClearUsageError() throws {
        let result = try framedump(["capture", "-d", Vivid.main, "-n", "1", "--set-ctrl", "string=1", "--quiet"])
        XCTAssertEqual(result.status, 2, result.stderr)
        XCTAssertTrue(result.stderr.contains("control string of \(Vivid.main) is a str control"), result.stderr)
    }

    /// A full disk: the file keeps only whole frames and the error names the path and ENOSPC.
    func testFullDiskKeepsWholeFrames() throws {
        let mountPoint = "\(work)/small"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        XCTAssertEqual(try run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint]).status, 0)
        defer { _ = try? run("/bin/umount", [mountPoint]) }
        let output = "\(mountPoint)/frames.raw"
        let result = try run(Self.framedump, ["capture"] + deterministic + ["-n", "30", "-o", output])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains(output) && result.stderr.contains("ENOSPC"), result.stderr)
        let size = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int)
        XCTAssertEqual(size % 460_800, 0, "the file ends in a partial frame")
        XCTAssertEqual(size, 4 * 460_800, "a 2 MiB tmpfs holds 4 whole frames")
        print("cli: ENOSPC on a 2 MiB tmpfs: \(size / 460_800) whole frames kept; \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
    }

    /// The ext4 scratch disk of the VM (`tools/vivid-vm --scratch-disk MIB`, which `tools/test`
    /// passes): its mount point from VIVID_VM_SCRATCH, checked to be ext4 in /proc/self/mounts.
    /// Asked to run against vivid, a VM without it fails the test (not a skip).
    static func scratchDirectory(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let path = try XCTUnwrap(ProcessInfo.processInfo.environment["VIVID_VM_SCRATCH"],
                                 "no scratch disk: boot the VM with tools/vivid-vm --scratch-disk MIB (tools/test does)", file: file, line: line)
        let mounts = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)
        var type: String?
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count >= 3 && String(fields[1]) == path { type = String(fields[2]) }
        }
        XCTAssertEqual(type, "ext4", "VIVID_VM_SCRATCH=\(path) should be an ext4 mount", file: file, line: line)
        guard type == "ext4" else { throw CaptureError(.invalidState, "no ext4 scratch disk") }
        return path
    }

    /// The JSON summary of a capture.
    func summary(_ result: Run, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        try result.jsonObject(file: file, line: line)
    }

    /// Raw output to ext4 on a virtio disk goes with O_DIRECT, straight from vivid's buffers, and
    /// stays byte-identical to v4l2-ctl's file on the same disk, for every memory kind. Single-planar,
    /// mmap, userptr and dmabuf from another vivid (vmalloc) go direct; vgem's PFN-mapped dumb buffers
    /// fail the direct writev with EFAULT and go through the page cache; multi-planar vivid puts a
    /// 128-byte data_offset header before the payload, so those frames go through the page cache.
    func testRawOutputToExt4GoesDirectAndIsByteIdenticalToV4L2Ctl() throws {
        let scratch = try Self.scratchDirectory()
        let directory = "\(scratch)/cli-direct-io"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let card = try XCTUnwrap(FileManager.default.fileExists(atPath: "/dev/dri/card0") ? "vgem" : nil, "boot the VM with --vgem")
        let cases: [(name: String, options: [String], direct: Bool)] = [
            ("mmap", ["--memory", "mmap"], Vivid.multiplanarMode == 1),
            ("userptr", ["--memory", "userptr"], Vivid.multiplanarMode == 1),
            ("dmabuf-video1", ["--memory", "dmabuf", "--dmabuf-from", Vivid.exporter], Vivid.multiplanarMode == 1),
            ("dmabuf-vgem", ["--memory", "dmabuf", "--dmabuf-from", card], false),
        ]
        let frameSize = 460_800
        var reference: Data?
        for (name, options, direct) in cases {
            let output = "\(directory)/\(name).raw"
            let result = try run(Self.framedump, ["capture"] + deterministic + ["-n", "30", "-o", output, "--json"] + options)
            XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)")
            let json = try summary(result)
            let framesDirect = try XCTUnwrap(json["framesDirect"] as? Int)
            let framesBuffered = try XCTUnwrap(json["framesBuffered"] as? Int)
            let note = try XCTUnwrap(json["directIO"] as? String)
            XCTAssertEqual(framesDirect + framesBuffered, 30, name)
            if direct {
                XCTAssertEqual(framesDirect, 30, "\(name): every single-planar frame goes direct to ext4; \(note)")
                XCTAssertTrue(note.hasPrefix("O_DIRECT for aligned frames: memory alignment 512, offset alignment 512 (statx STATX_DIOALIGN)"), note)
            } else {
                XCTAssertEqual(framesDirect, 0, "\(name): \(note)")
            }
            if name == "dmabuf-vgem" && Vivid.multiplanarMode == 1 {
                XCTAssertTrue(note.contains("EFAULT"), "vgem's mapping cannot be pinned for O_DIRECT: \(note)")
            }
            if reference == nil {
                let ctl = try run("/usr/bin/v4l2-ctl", ["-d", Vivid.main, "--stream-mmap", "--stream-count=30", "--stream-to=\(directory)/v4l2-ctl.raw"])
                XCTAssertEqual(ctl.status, 0, ctl.stderr)
                reference = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/v4l2-ctl.raw"))
                XCTAssertEqual(reference?.count, 30 * frameSize)
            }
            let produced = try Data(contentsOf: URL(fileURLWithPath: output))
            XCTAssertEqual(produced.count, 30 * frameSize, name)
            XCTAssertTrue(produced == reference, "\(name): framedump's file on ext4 differs from v4l2-ctl's")
            print("cli: ext4 --memory \(name): \(framesDirect) frames direct, \(framesBuffered) buffered, identical to v4l2-ctl; \(note)")
        }

        // --direct-io on to ext4 works; --direct-io off goes through the page cache.
        let on = try run(Self.framedump, ["capture"] + deterministic + ["-n", "5", "-o", "\(directory)/on.raw", "--json", "--direct-io", "on"])
        XCTAssertEqual(on.status, 0, on.stderr)
        XCTAssertEqual(try summary(on)["framesDirect"] as? Int, Vivid.multiplanarMode == 1 ? 5 : 0)
        let off = try run(Self.framedump, ["capture"] + deterministic + ["-n", "5", "-o", "\(directory)/off.raw", "--json", "--direct-io", "off"])
        XCTAssertEqual(off.status, 0, off.stderr)
        XCTAssertEqual(try summary(off)["framesDirect"] as? Int, 0)
        XCTAssertEqual(try summary(off)["directIO"] as? String, "not used: off (--direct-io off)")
    }

    /// tmpfs refuses O_DIRECT on Linux 6.1 (fcntl F_SETFL EINVAL): auto writes every frame
    /// through the page cache, byte-identical; --direct-io on fails with one line naming the path
    /// and EINVAL, exit 2, and leaves no file.
    func testDirectIOOnTmpfsFallsBackOrFailsWithOn() throws {
        let output = "\(work)/tmpfs.raw"
        let result = try run(Self.framedump, ["capture"] + deterministic + ["-n", "10", "-o", output, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try summary(result)
        XCTAssertEqual(json["framesDirect"] as? Int, 0)
        XCTAssertEqual(json["framesBuffered"] as? Int, 10)
        XCTAssertEqual(json["directIO"] as? String, "not used: the file system refuses O_DIRECT: fcntl(F_SETFL, O_DIRECT) failed: EINVAL (Invalid argument)")
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int, 10 * 460_800)

        let strict = "\(work)/strict.raw"
        let refused = try run(Self.framedump, ["capture"] + deterministic + ["-n", "10", "-o", strict, "--direct-io", "on"])
        XCTAssertEqual(refused.status, 2, refused.stderr)
        XCTAssertEqual(refused.stderr, "framedump: -o \(strict): --direct-io on: the file system refuses O_DIRECT: fcntl(F_SETFL, O_DIRECT) failed: EINVAL (Invalid argument)\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: strict), "--direct-io on left \(strict)")
        print("cli: tmpfs: auto wrote 10 frames through the page cache; --direct-io on: \(refused.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
    }

    /// SIGINT stops streaming cleanly: exit 0, whole frames only, the summary says interrupted.
    func testSIGINTStopsCleanlyWithWholeFramesAndASummary() throws {
        let output = "\(work)/interrupted.raw"
        let process = try ChildProcess(Self.framedump, ["capture"] + deterministic.filter { $0 != "--quiet" } + ["-n", "100000", "-o", output, "--json"])
        // Wait for frames to be written before interrupting.
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let size = try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int, size >= 5 * 460_800 { break }
            usleep(100_000)
        }
        process.send(SIGINT)
        let result = process.wait()
        XCTAssertEqual(result.status, 0, result.stderr)
        let summary = result.stdout
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: summary) as? [String: Any], String(decoding: summary, as: UTF8.self))
        XCTAssertEqual(json["interrupted"] as? Bool, true)
        let written = try XCTUnwrap(json["framesWritten"] as? Int)
        let size = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int)
        XCTAssertGreaterThanOrEqual(written, 5)
        XCTAssertEqual(size, written * 460_800, "the file holds exactly the frames the summary counts")
        print("cli: SIGINT after \(written) frames: exit 0, file \(size) bytes, summary interrupted=true")
    }
}
