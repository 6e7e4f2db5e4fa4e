import CTurboJPEG
import FrameBridge
import FrameBridgeTestSupport
import V4L2
import V4L2Simulator
import XCTest

/// Compressed capture on the simulator's MJPEG camera: framing, validation, policy, decoding.
final class CompressedCaptureTests: XCTestCase {
    let path = "/dev/video0"

    private func makePin(_ mjpeg: SimulatedMJPEG = SimulatedMJPEG(variants: 2), width: UInt32 = 320, height: UInt32 = 180,
                         policy: CorruptFramePolicy = .skip, pixelFormat: FourCC = .mjpeg,
                         production: SimulatedFrameProduction = .onDemand) throws -> (SimulatedV4L2Backend, CapturePin) {
        let backend = SimulatedV4L2Backend(path: path, configuration: SimulatedDeviceConfiguration(production: production, mjpeg: mjpeg))
        let device = try VideoDevice(path: path, backend: backend)
        let pin = try CapturePin(device: device, configuration: PinConfiguration(
            pixelFormat: pixelFormat, width: width, height: height, corruptFramePolicy: policy))
        return (backend, pin)
    }

    private func picture(_ variant: Int, subsampling: Int32 = 2, width: Int = 320, height: Int = 180) -> [UInt8] {
        SimulatedJPEG.encode(width: width, height: height, variant: variant, subsampling: subsampling, quality: 85)!
    }

    // MARK: - Framing and selection

    func testFramingOfACompressedFormatIsARangeUpToSizeImage() throws {
        let (_, pin) = try makePin(SimulatedMJPEG(maximumFrameSize: 57_600))
        let framing = pin.framing
        XCTAssertTrue(framing.isCompressed)
        XCTAssertEqual(framing.items.count, 1)
        XCTAssertEqual(framing.items[0].frameSizeMinimum, 0)
        XCTAssertEqual(framing.items[0].frameSizeMaximum, 57_600)
        XCTAssertEqual(framing.items[0].bufferSize, 57_600)
        XCTAssertEqual(framing.planeSizes, [57_600])
        XCTAssertTrue(framing.items[0].flags.contains(.compressed))
        // 57,600 of 320 x 180 x 2 = 115,200 bytes.
        XCTAssertEqual(framing.outputCompression, Fraction(1, 2))
        let json = String(decoding: try JSONEncoder().encode(framing), as: UTF8.self)
        XCTAssertTrue(json.contains("\"isCompressed\":true"), json)
        XCTAssertTrue(json.contains("\"compressed\""), json)

        let (_, plain) = try makePin(pixelFormat: .yuyv)
        XCTAssertFalse(plain.framing.isCompressed)
        XCTAssertEqual(plain.framing.items[0].frameSizeMinimum, 320 * 180 * 2)
        XCTAssertEqual(plain.framing.outputCompression, Fraction(1, 1))
        XCTAssertFalse(plain.framing.items[0].flags.contains(.compressed))
    }

    func testSelectionChecksPlaneSizeAgainstTheUpperBound() throws {
        let (_, pin) = try makePin(SimulatedMJPEG(maximumFrameSize: 60_000))
        let selection = AllocatorSelection()
        let small = UserPointerAllocator(planeSizes: [59_999])
        let reason = try XCTUnwrap(selection.rejectionReason(small, framing: pin.framing))
        XCTAssertTrue(reason.contains("below the largest compressed frame, 60000 bytes"), reason)
        XCTAssertTrue(reason.contains("0...60000"), reason)
        XCTAssertNil(selection.rejectionReason(UserPointerAllocator(planeSizes: [60_000]), framing: pin.framing))
        // A user-memory stream sized to the framing captures whole frames.
        let result = try pin.start(AllocatorSelection(candidates: [UserPointerAllocator()]))
        XCTAssertFalse(result.fellBackToDefault)
        var frame = try unwrapPointer(try pin.next(timeout: .milliseconds(1000)))
        try frame.withLockedPayload { payload in
            XCTAssertEqual(payload.compressedBytes.bytes, picture(Int(payload.info.sequence) % 2))
            XCTAssertEqual(payload.info.planes[0].length, 61_440, "page-rounded 60,000")
        }
        frame.release()
        pin.stop()
    }

    // MARK: - Validation

    func testMarkerChecks() {
        func defects(_ bytes: [UInt8]) -> CompressedFrameDefects { bytes.withUnsafeBytes { JPEGFrameCheck.defects($0) } }
        XCTAssertEqual(defects([0xFF, 0xD8, 1, 2, 0xFF, 0xD9]), [])
        XCTAssertEqual(defects([]), .empty)
        XCTAssertEqual(defects([0, 0xD8, 1, 2, 0xFF, 0xD9]), .missingStartOfImage)
        XCTAssertEqual(defects([0xFF, 0xD8, 1, 2, 3]), .truncated)
        XCTAssertEqual(defects([0xFF, 0xD8]), .truncated, "an SOI alone")
        XCTAssertEqual(defects([0xFF, 0xD8, 0xFF, 0xD9]), [])
        XCTAssertEqual(defects([0xFF, 0xD9]), [.missingStartOfImage, .truncated])
        let padded = [0xFF, 0xD8, 1, 0xFF, 0xD9] + [UInt8](repeating: 0, count: JPEGFrameCheck.maximumTrailingPadding)
        XCTAssertEqual(defects(padded), [], "padding up to the bound")
        XCTAssertEqual(defects(padded + [0]), .truncated, "one zero more than the bound")
        XCTAssertEqual(defects([0xFF, 0xD8, 1, 0xFF, 0xD9, 0xFF]), .truncated, "only zeros are padding")
    }

    /// Captures `count` frames (each fault injected before the frame of that index is made).
    private func capture(_ pin: CapturePin, _ backend: SimulatedV4L2Backend, count: Int, faults: [SimulatedFault],
                         _ body: (FramePayload) throws -> Void) throws {
        try pin.start()
        for fault in faults { XCTAssertTrue(backend.injectFault(fault, path: path)) }
        for _ in 0..<count {
            var frame = try unwrapPointer(try pin.next(timeout: .milliseconds(1000)))
            try frame.withLockedPayload(body)
            frame.release()
        }
    }

    /// One frame per step, made by the simulator after the step's fault (if any) is injected;
    /// each step's answer is what the pin delivered for it: (defects, payload size, buffer length), or nil.
    private func steps(_ pin: CapturePin, _ backend: SimulatedV4L2Backend,
                       _ faults: [SimulatedFault?]) throws -> [(CompressedFrameDefects, Int, Int, UInt32)?] {
        try pin.start()
        var answers: [(CompressedFrameDefects, Int, Int, UInt32)?] = []
        for fault in faults {
            if let fault { XCTAssertTrue(backend.injectFault(fault, path: path)) }
            XCTAssertEqual(backend.produceFrames(path: path, count: 1), 1)
            guard var frame = try pin.next(timeout: .milliseconds(60)) else {
                answers.append(nil)
                continue
            }
            try frame.withLockedPayload { payload in
                answers.append((payload.info.defects, payload.compressedBytes.byteCount, payload.info.planes[0].length, payload.info.sequence))
                if !payload.info.isCorrupt {
                    XCTAssertEqual(payload.compressedBytes.bytes, self.picture(Int(payload.info.sequence) % 2))
                }
            }
            frame.release()
        }
        return answers
    }

    private let corruptions: [SimulatedFault?] = [nil, .truncatedJPEG, .missingSOI, .bytesUsedZero, .bytesUsedOverLength, nil]

    func testSkipPolicyCountsEachDefectAndRequeuesTheFrame() throws {
        let (backend, pin) = try makePin(production: .manual)
        let answers = try steps(pin, backend, corruptions)
        XCTAssertEqual(answers.map { $0 == nil }, [false, true, true, true, true, false], "corrupt frames are not delivered")
        XCTAssertEqual(answers.compactMap { $0?.3 }, [0, 5])
        XCTAssertTrue(answers.compactMap { $0?.0 }.allSatisfy(\.isEmpty))
        let statistics = pin.statistics
        XCTAssertEqual(statistics.compressedTruncated, 1)
        XCTAssertEqual(statistics.compressedMissingStartOfImage, 1)
        XCTAssertEqual(statistics.compressedEmpty, 1)
        XCTAssertEqual(statistics.compressedBytesUsedOverLength, 1)
        XCTAssertEqual(statistics.corruptSkipped, 4)
        XCTAssertEqual(statistics.corruptDelivered, 0)
        XCTAssertEqual(statistics.driverViolations, 0, "a compressed frame's size is a defect, not a violation")
        XCTAssertEqual(statistics.delivered, 2)
        XCTAssertEqual(statistics.dropped, 0, "skipped frames are not drops")
        XCTAssertNotNil(statistics.lastCorruption)
        // Every skipped buffer went straight back to the driver: nothing is held or lost.
        let counts = pin.bufferCounts
        XCTAssertEqual(counts.held, 1, "the leading edge's frame")
        XCTAssertEqual(counts.free, 0)
        XCTAssertEqual(counts.queued, backend.queueState(path: path)!.bufferCount - 1)
        XCTAssertEqual(statistics.requeueFailures, 0)
        pin.stop()
    }

    func testDeliverPolicyFlagsCorruptFrames() throws {
        let (backend, pin) = try makePin(policy: .deliver, production: .manual)
        let answers = try steps(pin, backend, corruptions).map { try XCTUnwrap($0, "every frame is delivered") }
        XCTAssertEqual(answers.map(\.0), [[], .truncated, .missingStartOfImage, .empty, .bytesUsedOverLength, []])
        XCTAssertEqual(answers[1].1, picture(1).count / 2, "a truncated frame is delivered as it came")
        XCTAssertEqual(answers[2].1, picture(0).count)
        XCTAssertEqual(answers[3].1, 0, "an empty frame")
        XCTAssertEqual(answers[4].1, answers[4].2, "bytesused > length is cut to the buffer")
        let statistics = pin.statistics
        XCTAssertEqual(statistics.corruptDelivered, 4)
        XCTAssertEqual(statistics.corruptSkipped, 0)
        XCTAssertEqual(statistics.compressedTruncated, 1)
        XCTAssertEqual(statistics.compressedMissingStartOfImage, 1)
        XCTAssertEqual(statistics.compressedEmpty, 1)
        XCTAssertEqual(statistics.compressedBytesUsedOverLength, 1)
        XCTAssertEqual(statistics.delivered, 6)
        pin.stop()
    }

    func testPaddingWithinTheBoundIsSound() throws {
        let (backend, pin) = try makePin(SimulatedMJPEG(variants: 1, trailingPadding: 512))
        try capture(pin, backend, count: 3, faults: []) { payload in
            XCTAssertFalse(payload.info.isCorrupt)
            XCTAssertEqual(payload.compressedBytes.byteCount, self.picture(0).count + 512)
        }
        XCTAssertEqual(pin.statistics.corruptSkipped, 0)
        pin.stop()

        let (backend2, padded) = try makePin(SimulatedMJPEG(variants: 1, trailingPadding: JPEGFrameCheck.maximumTrailingPadding + 1),
                                             policy: .deliver)
        try capture(padded, backend2, count: 1, faults: []) { payload in
            XCTAssertEqual(payload.info.defects, .truncated, "more padding than the bound: no EOI found")
        }
        padded.stop()
    }

    func testUncompressedFramesAreNotMarkerChecked() throws {
        let (backend, pin) = try makePin(pixelFormat: .yuyv)
        try capture(pin, backend, count: 3, faults: [.bytesUsedZero]) { payload in
            XCTAssertFalse(payload.info.isCorrupt)
            XCTAssertEqual(payload.compressedBytes.byteCount, 320 * 180 * 2)
        }
        XCTAssertEqual(pin.statistics.driverViolations, 1, "bytesused 0 stays a violation for uncompressed formats")
        XCTAssertEqual(pin.statistics.corruptSkipped, 0)
        pin.stop()
    }

    // MARK: - Decoding

    /// TurboJPEG's own planar decode (tjDecompressToYUV2, rows unpadded), for comparison.
    private func referenceYUV(_ jpeg: [UInt8], width: Int, height: Int, subsampling: Int32) -> [UInt8] {
        let handle = tjInitDecompress()!
        defer { tjDestroy(handle) }
        var out = [UInt8](repeating: 0, count: Int(tjBufSizeYUV2(Int32(width), 1, Int32(height), subsampling)))
        let result = jpeg.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { tjDecompressToYUV2(handle, source.baseAddress, UInt(source.count), $0.baseAddress, Int32(width), 1, Int32(height), 0) }
        }
        XCTAssertEqual(result, 0)
        return out
    }

    func testDecoderWritesPlanarYUVIntoTheCallersBuffer() throws {
        let decoder = try JPEGDecoder()
        for (subsampling, kind) in [(Int32(2), JPEGSubsampling.s420), (1, .s422)] {
            let jpeg = picture(1, subsampling: subsampling, width: 322, height: 182)
            let size = kind.planarSize(width: 322, height: 182)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
            defer { buffer.deallocate() }
            let header = try jpeg.withUnsafeBytes { try decoder.decodeYUV($0, into: buffer) }
            XCTAssertEqual(header.width, 322)
            XCTAssertEqual(header.height, 182)
            XCTAssertEqual(header.subsampling, kind)
            XCTAssertEqual(Array(buffer), referenceYUV(jpeg, width: 322, height: 182, subsampling: subsampling))
            // The picture, not just any bytes: the luma of the bottom-left ramp is dark, the top-left bar light.
            XCTAssertGreaterThan(buffer[10 * 322 + 5], 200)
            XCTAssertLessThan(buffer[170 * 322 + 2], 40)
        }
        // Too small a buffer is refused.
        let jpeg = picture(0)
        let small = UnsafeMutableRawBufferPointer.allocate(byteCount: 100, alignment: 16)
        defer { small.deallocate() }
        XCTAssertThrowsError(try jpeg.withUnsafeBytes { try decoder.decodeYUV($0, into: small) })
    }

    func testDecoderRefusesDamagedJPEGs() throws {
        let decoder = try JPEGDecoder()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 320 * 180 * 3, alignment: 16)
        defer { buffer.deallocate() }
        let jpeg = picture(0)
        let truncated = Array(jpeg.prefix(jpeg.count / 2))
        XCTAssertThrowsError(try truncated.withUnsafeBytes { try decoder.decodeYUV($0, into: buffer) }) { error in
            XCTAssertTrue("\(error)".contains("JPEG decode"), "\(error)")
        }
        XCTAssertThrowsError(try truncated.withUnsafeBytes { try decoder.decodeRGB($0, into: buffer) })
        let garbage: [UInt8] = [0xFF, 0xD8] + [UInt8](repeating: 0, count: 60) + [0xFF, 0xD9]
        XCTAssertThrowsError(try garbage.withUnsafeBytes { try decoder.header($0) })
        // The decoder still works after errors (the handle is reused).
        XCTAssertNoThrow(try jpeg.withUnsafeBytes { try decoder.decodeYUV($0, into: buffer) })
    }

    func testDecodingAFrameFromThePin() throws {
        let (backend, pin) = try makePin(policy: .deliver)
        let decoder = try JPEGDecoder()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: JPEGSubsampling.s420.planarSize(width: 320, height: 180), alignment: 16)
        defer { buffer.deallocate() }
        var results: [Bool] = []
        try capture(pin, backend, count: 3, faults: [.truncatedJPEG]) { payload in
            do {
                try decoder.decodeYUV(payload, into: buffer)
                XCTAssertEqual(Array(buffer), self.referenceYUV(self.picture(Int(payload.info.sequence) % 2), width: 320, height: 180, subsampling: 2))
                results.append(true)
            } catch let error as JPEGDecodeError {
                XCTAssertTrue(error.message.contains("corrupt"), error.message)
                results.append(false)
            }
        }
        XCTAssertEqual(results, [false, true, true])
        pin.stop()
    }
}
