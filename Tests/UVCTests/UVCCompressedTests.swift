import Foundation
import FrameBridgeTestSupport
import UVCCamera
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// MJPEG from the emulated camera through the real uvcvideo: framing, every output, and the
/// truncated frames real cameras send.
final class UVCCompressedTests: XCTestCase {
    let work = "/tmp/framedump-uvc-mjpeg-tests"

    override func setUpWithError() throws {
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    func mjpeg(_ width: Int, _ height: Int) -> [String] {
        ["--pixel-format", "MJPG", "--size", "\(width)x\(height)", "--fps", "15", "--quiet"]
    }

    /// ffmpeg's decoding of an image file to packed RGB, its chroma interpolated (ffmpeg's
    /// default conversion repeats each chroma sample; libjpeg-turbo interpolates, as these
    /// flags make ffmpeg do: a check with a 4:2:2 JPEG of colour bars gave 0/255 apart).
    /// `-cpuflags 0` keeps ffmpeg on its C code: in the VM (QEMU's `-cpu max`) its SIMD
    /// conversion rounded a few pixels one step further (3/255) than on the host.
    func ffmpegRGB(_ path: String) throws -> [UInt8] {
        let out = path + ".rgb"
        let run = try UVC.run("/usr/bin/ffmpeg", ["-v", "error", "-cpuflags", "0", "-y", "-i", path, "-sws_flags", "bilinear+full_chroma_int+accurate_rnd",
                                                  "-f", "rawvideo", "-pix_fmt", "rgb24", out])
        XCTAssertEqual(run.status, 0, run.stderr)
        return [UInt8](try UVC.read(out))
    }

    func testFramingReportsMJPEGAsCompressed() throws {
        let camera = try EmulatedCamera()
        let run = try UVC.run(UVC.framedump, ["framing", "-d", camera.node, "--pixel-format", "MJPG", "--size", "640x360", "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let framing = try XCTUnwrap(try UVC.json(run)["framing"] as? [String: Any])
        let item = try XCTUnwrap((framing["items"] as? [[String: Any]])?.first)
        XCTAssertEqual(item["frameSizeMinimum"] as? Int, 0, "a compressed frame's size varies from 0")
        XCTAssertEqual(item["frameSizeMaximum"] as? Int, 640 * 360 * 2, "up to uvcvideo's sizeimage (dwMaxVideoFrameSize)")
        XCTAssertTrue((item["flags"] as? [String] ?? []).contains("compressed"), "\(item)")
        XCTAssertEqual(item["memoryKinds"] as? [String], ["mmap", "userptr", "dmabuf"])
        let info = try UVC.run(UVC.framedump, ["info", "-d", camera.node])
        XCTAssertTrue(info.text.contains("'MJPG' (Motion-JPEG), compressed"), info.text)
        XCTAssertFalse(info.text.contains("'YUYV' (YUYV 4:2:2), compressed"), info.text)
    }

    func testSixtyFramesAtTwoSizesWithEveryOutput() throws {
        let camera = try EmulatedCamera()
        let encoder = try JPEGEncoder()
        for (width, height) in [(640, 360), (320, 180)] {
            let dir = "\(work)/\(width)"
            let raw = "\(dir).mjpeg"
            let run = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "60", "-o", raw, "--jpeg-dir", "\(dir)-jpeg",
                                                  "--every", "1", "--json"] + mjpeg(width, height))
            XCTAssertEqual(run.status, 0, run.stderr)
            let summary = try UVC.json(run)
            // Raw: the JPEGs as the camera sent them, concatenated; ffmpeg reads them.
            let jpegs = UVC.splitJPEGs(try UVC.read(raw))
            XCTAssertEqual(jpegs.count, 60)
            let dropped = summary["framesDropped"] as? Int ?? -1
            if dropped == 0 {
                for (k, jpeg) in jpegs.enumerated() {
                    let sent = try FramePattern.jpeg(width: width, height: height, frameNumber: UInt32(k), encoder: encoder)
                    XCTAssertTrue(jpeg == Data(sent), "\(width)x\(height): frame \(k) differs from what the camera sent")
                }
            } else {
                // A loaded VM dropped frames: each is still one the camera sent.
                let sent = try (0..<UInt32(FramePattern.jpegPeriod)).map { Data(try FramePattern.jpeg(width: width, height: height, frameNumber: $0, encoder: encoder)) }
                XCTAssertTrue(jpegs.allSatisfy { sent.contains($0) }, "\(width)x\(height): a frame that the camera never sent")
            }
            let probe = try UVC.run("/usr/bin/ffprobe", ["-v", "error", "-f", "mjpeg", "-count_frames", "-show_entries",
                                                         "stream=nb_read_frames,width,height", "-of", "csv=p=0", raw])
            XCTAssertEqual(probe.text.trimmingCharacters(in: .whitespacesAndNewlines), "\(width),\(height),60", probe.stderr)
            // --jpeg-dir: one whole file per frame, the same bytes.
            let files = try FileManager.default.contentsOfDirectory(atPath: "\(dir)-jpeg").filter { $0.hasSuffix(".jpg") }.sorted()
            XCTAssertEqual(files.count, 60)
            for (k, name) in files.enumerated() where k < jpegs.count {
                XCTAssertTrue(try UVC.read("\(dir)-jpeg/\(name)") == jpegs[k], "\(name) is not frame \(k) of the raw stream")
            }

            // PNGs: decoded with libjpeg-turbo; compared with ffmpeg's decoding of the same JPEG.
            let pngRun = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "60", "-o", "\(dir)-png.mjpeg",
                                                     "--png-dir", "\(dir)-png", "--every", "20"] + mjpeg(width, height))
            XCTAssertEqual(pngRun.status, 0, pngRun.stderr)
            let pngs = try FileManager.default.contentsOfDirectory(atPath: "\(dir)-png").filter { $0.hasSuffix(".png") }.sorted()
            XCTAssertEqual(pngs.count, 3, "\(pngs)")
            let pngJPEGs = UVC.splitJPEGs(try UVC.read("\(dir)-png.mjpeg"))
            for name in pngs {
                let index = try XCTUnwrap(Int(name.dropFirst(6).prefix(6)), name)
                let jpegPath = "\(dir)-png/\(index).jpg"
                try pngJPEGs[index].write(to: URL(fileURLWithPath: jpegPath))
                let ours = try ffmpegRGB("\(dir)-png/\(name)"), reference = try ffmpegRGB(jpegPath)
                XCTAssertEqual(ours.count, width * height * 3)
                XCTAssertEqual(ours.count, reference.count)
                let differences = zip(ours, reference).map { abs(Int($0) - Int($1)) }
                let worst = differences.max() ?? 255
                let beyond = differences.filter { $0 > 2 }.count
                // Within 2/255 but where chroma is interpolated across a colour bar's edge: there
                // libjpeg-turbo's and swscale's filters differ by one more step (at 320x180, 164 of
                // 172,800 values, all in the column beside the edge at x = 280, are 3/255 apart).
                XCTAssertLessThanOrEqual(worst, 3, "\(name): differs from ffmpeg's decoding by up to \(worst)/255")
                XCTAssertLessThanOrEqual(Double(beyond), Double(differences.count) * 0.002,
                                         "\(name): \(beyond) of \(differences.count) values more than 2/255 from ffmpeg's decoding")
                print("uvc: mjpeg \(width)x\(height) \(name): within \(worst)/255 of ffmpeg's decoding, \(beyond) of \(differences.count) values beyond 2/255")
            }

            // y4m: ffmpeg reads the stream back with the right frame count.
            let y4m = "\(dir).y4m"
            let y4mRun = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "60", "-o", y4m, "--container", "y4m"] + mjpeg(width, height))
            XCTAssertEqual(y4mRun.status, 0, y4mRun.stderr)
            let y4mProbe = try UVC.run("/usr/bin/ffprobe", ["-v", "error", "-f", "yuv4mpegpipe", "-count_frames", "-show_entries",
                                                            "stream=nb_read_frames,width,height,pix_fmt,color_range", "-of", "csv=p=0", y4m])
            XCTAssertEqual(y4mProbe.text.trimmingCharacters(in: .whitespacesAndNewlines), "\(width),\(height),yuv422p,pc,60", y4mProbe.stderr)
            print("uvc: mjpeg \(width)x\(height): 60 frames raw (ffmpeg -f mjpeg: 60), --jpeg-dir 60 files, 3 PNGs, y4m 60 frames")
        }
    }

    func testTruncatedFramesAreCountedAndSkippedOrDeliveredFlagged() throws {
        // Frames 5, 10, 15, ... (counted from 1) are cut short: no EOI.
        let camera = try EmulatedCamera(["--corrupt-every", "5"])
        var run = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "16", "-o", "\(work)/skip.mjpeg", "--json"] + mjpeg(640, 360))
        XCTAssertEqual(run.status, 0, run.stderr)
        var compressed = try XCTUnwrap(try UVC.json(run)["compressed"] as? [String: Any])
        var jpegs = UVC.splitJPEGs(try UVC.read("\(work)/skip.mjpeg"))
        XCTAssertEqual(jpegs.count, 16)
        XCTAssertTrue(jpegs.allSatisfy { $0.suffix(2) == Data([0xFF, 0xD9]) }, "a truncated frame was written")
        let skipped = compressed["corruptSkipped"] as? Int ?? -1
        XCTAssertGreaterThanOrEqual(skipped, 3, "16 good frames span at least 3 truncated ones")
        XCTAssertEqual(compressed["corruptTruncated"] as? Int, skipped)
        XCTAssertEqual(compressed["corruptDelivered"] as? Int, 0)

        run = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "-n", "16", "-o", "\(work)/deliver.mjpeg",
                                          "--corrupt-frames", "deliver", "--json"] + mjpeg(640, 360))
        XCTAssertEqual(run.status, 0, run.stderr)
        compressed = try XCTUnwrap(try UVC.json(run)["compressed"] as? [String: Any])
        jpegs = UVC.splitJPEGs(try UVC.read("\(work)/deliver.mjpeg"))
        let truncated = jpegs.filter { $0.suffix(2) != Data([0xFF, 0xD9]) }.count
        XCTAssertEqual(jpegs.count, 16)
        XCTAssertGreaterThanOrEqual(truncated, 3)
        XCTAssertEqual(compressed["corruptDelivered"] as? Int, truncated)
        XCTAssertEqual(compressed["corruptTruncated"] as? Int, truncated)
        print("uvc: --corrupt-every 5: \(skipped) truncated frames skipped by default; \(truncated) delivered and flagged with --corrupt-frames deliver")
    }
}
