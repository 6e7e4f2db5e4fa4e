import Foundation
import FrameBridgeTestSupport
import UVCCamera
import XCTest

/// A USB camera into an encoder, as on a Raspberry Pi: the emulated webcam's YUYV through the
/// real uvcvideo, into vicodec's FWHT encoder (tools/test boots this VM with --m2m too), then
/// decoded back by vicodec's decoder through v4l2-ctl. Each decoded frame is compared with the
/// camera's own frame of the number its band shows.
final class UVCEncodeTests: XCTestCase {
    let work = "/tmp/framedump-uvc-encode-tests"

    override func setUpWithError() throws {
        try UVC.skipUnlessRequested()
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    /// `/dev/videoN` of the driver node named `name` (vicodec's are `stateful-encoder`, ...).
    func node(_ name: String) throws -> String {
        let directory = "/sys/class/video4linux"
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            let text = try? String(contentsOfFile: "\(directory)/\(entry)/name", encoding: .utf8)
            if text?.trimmingCharacters(in: .whitespacesAndNewlines) == name { return "/dev/\(entry)" }
        }
        XCTFail("no \(name) node: boot the VM with --m2m (tools/test does)")
        throw CocoaError(.fileNoSuchFile)
    }

    func testWebcamYUYVIntoTheEncoderDecodesToTheCamerasFrames() throws {
        let decoder = try node("stateful-decoder")
        let camera = try EmulatedCamera()
        let encoded = "\(work)/webcam.fwht"
        let run = try UVC.run(UVC.framedump, ["capture", "-d", camera.node, "--pixel-format", "YUYV", "--size", "640x360", "--fps", "15",
                                              "-n", "30", "--encode", "fwht", "-o", encoded, "--json"])
        XCTAssertEqual(run.status, 0, run.stderr)
        let summary = try UVC.json(run)
        let connection = try XCTUnwrap(summary["connection"] as? [String: Any])
        let result = try XCTUnwrap(summary["result"] as? [String: Any])
        XCTAssertEqual(connection["zeroCopy"] as? Bool, true, "\(connection)")
        XCTAssertEqual(result["frames"] as? Int, 30)
        XCTAssertEqual(result["timestampsMatched"] as? Int, 30)

        let decoded = "\(work)/webcam.yuv"
        let ctl = try UVC.run("/usr/bin/v4l2-ctl", ["-d", decoder, "-v", "pixelformat=YUYV", "--stream-from-hdr", encoded,
                                                    "--stream-mmap", "--stream-out-mmap", "--stream-to", decoded])
        XCTAssertEqual(ctl.status, 0, ctl.stderr)
        let frames = try UVC.read(decoded)
        XCTAssertEqual(frames.count / UVC.frameBytes, 30, "\(frames.count) bytes decoded")
        var numbers: [UInt32] = []
        var worst = Double.infinity
        for k in 0..<min(30, frames.count / UVC.frameBytes) {
            let frame = frames.subdata(in: k * UVC.frameBytes..<(k + 1) * UVC.frameBytes)
            guard let number = frame.withUnsafeBytes({ FramePattern.frameNumber(yuyv: $0, width: UVC.width, height: UVC.height) }) else {
                XCTFail("decoded frame \(k) shows no frame number")
                continue
            }
            numbers.append(number)
            let expected = UVC.pattern(number)
            var squares = 0.0
            for i in 0..<frame.count {
                let d = Double(frame[frame.startIndex + i]) - Double(expected[expected.startIndex + i])
                squares += d * d
            }
            worst = min(worst, squares == 0 ? .infinity : 10 * log10(255 * 255 / (squares / Double(frame.count))))
        }
        print("uvc: webcam YUYV -> vicodec -> v4l2-ctl's decode: \(numbers.count) frames, numbers \(numbers.first ?? 0)...\(numbers.last ?? 0), worst PSNR \(worst) dB")
        XCTAssertEqual(numbers, numbers.sorted(), "decoded frames out of order: \(numbers)")
        XCTAssertEqual(Set(numbers).count, numbers.count, "a frame decoded twice: \(numbers)")
        XCTAssertGreaterThan(worst, 30, "a decoded frame is too far from the camera's")
    }
}
