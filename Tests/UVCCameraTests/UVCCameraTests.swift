import UVCCamera
import XCTest

/// The emulated camera's logic on the host: wire format, descriptors, requests, pictures.
final class UVCCameraTests: XCTestCase {
    func submitBytes(seqnum: UInt32, direction: UInt32, endpoint: UInt32, length: Int32, packets: Int32, setup: [UInt8] = [UInt8](repeating: 0, count: 8)) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 48)
        func put(_ at: Int, _ v: UInt32) { b[at] = UInt8(v >> 24); b[at + 1] = UInt8((v >> 16) & 0xFF); b[at + 2] = UInt8((v >> 8) & 0xFF); b[at + 3] = UInt8(v & 0xFF) }
        put(0, 1); put(4, seqnum); put(8, 0x10002); put(12, direction); put(16, endpoint)
        put(24, UInt32(bitPattern: length)); put(32, UInt32(bitPattern: packets))
        b.replaceSubrange(40..<48, with: setup)
        return b
    }

    func testParsesAnIsochronousSubmitOnlyWhenComplete() throws {
        var bytes = submitBytes(seqnum: 7, direction: 1, endpoint: 1, length: 2 * 3072, packets: 2)
        for i in 0..<2 { // descriptors: offset, length, actual, status
            bytes += [0, 0, UInt8((i * 3072) >> 8), UInt8((i * 3072) & 0xFF), 0, 0, 0x0C, 0x00] + [UInt8](repeating: 0, count: 8)
        }
        let isIso: (UInt32, USBIP.Direction) -> Bool = { ep, dir in ep == 1 && dir == .in }
        XCTAssertNil(try bytes.dropLast().withUnsafeBytes { try USBIP.parse($0, isIsochronous: isIso) })
        let parsed = try bytes.withUnsafeBytes { try USBIP.parse($0, isIsochronous: isIso) }
        guard case .submit(let submit)? = parsed?.0 else { return XCTFail("not a submit") }
        XCTAssertEqual(parsed?.1, 48 + 32)
        XCTAssertEqual(submit.seqnum, 7)
        XCTAssertEqual(submit.isoPackets.map(\.offset), [0, 3072])
        XCTAssertEqual(submit.isoPackets.map(\.length), [3072, 3072])
    }

    func testRejectsAnUnknownCommand() {
        var bytes = [UInt8](repeating: 0, count: 48)
        bytes[3] = 9
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try USBIP.parse($0, isIsochronous: { _, _ in false }) })
    }

    func testConfigurationDescriptorLengthsAddUp() {
        let config = UVCDescriptors.configuration(CameraConfiguration())
        XCTAssertEqual(Int(config[2]) | Int(config[3]) << 8, config.count)
        var offset = 0
        var types: [UInt8] = []
        while offset < config.count {
            let length = Int(config[offset])
            XCTAssertGreaterThan(length, 1)
            types.append(config[offset + 1])
            offset += length
        }
        XCTAssertEqual(offset, config.count, "descriptors overrun the total length")
        XCTAssertEqual(types.filter { $0 == 0x04 }.count, 3, "interfaces: VC, VS alt 0, VS alt 1")
        XCTAssertEqual(types.last, 0x05, "the isochronous endpoint comes last")
    }

    func testProbeNegotiationAndControls() {
        let device = CameraDevice(configuration: CameraConfiguration())
        // SET_CUR probe asking for format 9, frame 9, 1 fps: clamped to what the camera has.
        var probe = [UInt8](repeating: 0, count: 26)
        probe[2] = 9; probe[3] = 9
        probe[4] = 0x80; probe[5] = 0x96; probe[6] = 0x98 // 10,000,000 (1 s)
        let setProbe: [UInt8] = [0x21, 0x01, 0x00, 0x01, 0x01, 0x00, 26, 0]
        XCTAssertEqual(device.control(setup: setProbe, data: probe).0, .data([]))
        let getProbe: [UInt8] = [0xA1, 0x81, 0x00, 0x01, 0x01, 0x00, 26, 0]
        guard case .data(let answer) = device.control(setup: getProbe, data: []).0 else { return XCTFail("stall") }
        XCTAssertEqual(answer[2], 2, "format index clamped to MJPEG")
        XCTAssertEqual(answer[3], 2, "frame index clamped to 320x180")
        let interval = UInt32(answer[4]) | UInt32(answer[5]) << 8 | UInt32(answer[6]) << 16 | UInt32(answer[7]) << 24
        XCTAssertEqual(interval, 666_666, "the nearest interval offered (15 fps)")
        XCTAssertEqual(UInt32(answer[22]) | UInt32(answer[23]) << 8, 3072)

        // Brightness (PU 2, selector 2): in range takes, out of range stalls.
        let setBrightness: [UInt8] = [0x21, 0x01, 0x00, 0x02, 0x00, 0x02, 2, 0]
        XCTAssertEqual(device.control(setup: setBrightness, data: [40, 0]).0, .data([]))
        XCTAssertEqual(device.brightness, 40)
        XCTAssertEqual(device.control(setup: setBrightness, data: [100, 0]).0, .stall)
        XCTAssertEqual(device.brightness, 40)
        let getMin: [UInt8] = [0xA1, 0x82, 0x00, 0x02, 0x00, 0x02, 2, 0]
        XCTAssertEqual(device.control(setup: getMin, data: []).0, .data([0xC0, 0xFF]), "-64")
        // Streaming starts with alternate setting 1 and stops with 0.
        XCTAssertEqual(device.control(setup: [0x01, 11, 1, 0, 1, 0, 0, 0], data: []).1, .streamOn)
        XCTAssertEqual(device.control(setup: [0x01, 11, 0, 0, 1, 0, 0, 0], data: []).1, .streamOff)
    }

    func testPatternSpellsTheFrameNumberAndControlsActOnLuma() throws {
        for number: UInt32 in [0, 1, 8, 9, 255, 0xDEAD_BEEF] {
            let frame = FramePattern.yuyv(width: 640, height: 360, frameNumber: number)
            XCTAssertEqual(frame.withUnsafeBytes { FramePattern.frameNumber(yuyv: $0, width: 640, height: 360) }, number)
        }
        let plain = FramePattern.yuyv(width: 320, height: 180, frameNumber: 3)
        let bright = FramePattern.yuyv(width: 320, height: 180, frameNumber: 3, brightness: 20)
        let row = 100 * 320 * 2
        XCTAssertEqual(Int(bright[row]), Int(plain[row]) + 20, "white bar luma + 20")
        XCTAssertEqual(bright[row + 1], plain[row + 1], "chroma untouched")
    }

    func testJPEGsAreDeterministicBaselineWithMarkers() throws {
        let encoder = try JPEGEncoder()
        let a = try FramePattern.jpeg(width: 320, height: 180, frameNumber: 5, encoder: encoder)
        let b = try FramePattern.jpeg(width: 320, height: 180, frameNumber: 5, encoder: try JPEGEncoder())
        XCTAssertEqual(a, b)
        XCTAssertEqual(Array(a.prefix(2)), [0xFF, 0xD8])
        XCTAssertEqual(Array(a.suffix(2)), [0xFF, 0xD9])
        XCTAssertTrue(a.indices.dropLast().contains { a[$0] == 0xFF && a[$0 + 1] == 0xC0 }, "SOF0: baseline")
        let c = try FramePattern.jpeg(width: 320, height: 180, frameNumber: 6, encoder: encoder)
        XCTAssertNotEqual(a, c)
    }
}
