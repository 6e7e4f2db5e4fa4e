import CTurboJPEG
import CV4L2
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// The simulator's MJPEG camera: the format as uvcvideo reports it, real JPEG frames, faults.
final class MJPEGSimulatorTests: XCTestCase {
    private func makeCamera(_ mjpeg: SimulatedMJPEG = SimulatedMJPEG()) throws -> (SimulatedV4L2Backend, VideoDevice) {
        let backend = makeBackend(SimulatedDeviceConfiguration(production: .onDemand, mjpeg: mjpeg))
        let device = try VideoDevice(path: videoPath, backend: backend)
        return (backend, device)
    }

    /// TurboJPEG's answer for a JPEG: (width, height, subsampling), or nil when it cannot read it.
    private func jpegHeader(_ bytes: UnsafeRawBufferPointer) -> (Int, Int, Int32)? {
        guard let handle = tjInitDecompress() else { return nil }
        defer { tjDestroy(handle) }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        guard tjDecompressHeader3(handle, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt(bytes.count),
                                  &width, &height, &subsampling, &colorspace) == 0 else { return nil }
        return (Int(width), Int(height), subsampling)
    }

    func testMJPEGIsOfferedFlaggedCompressedOnlyWhenConfigured() throws {
        let (_, device) = try makeCamera()
        let formats = try device.formats(.videoCapture)
        let mjpeg = try XCTUnwrap(formats.first { $0.pixelFormat == .mjpeg })
        XCTAssertEqual(mjpeg.flags & FormatDescription.flagCompressed, FormatDescription.flagCompressed)
        XCTAssertTrue(mjpeg.isCompressed)
        XCTAssertEqual(mjpeg.description, "Motion-JPEG")
        XCTAssertFalse(formats.first { $0.pixelFormat == .yuyv }!.isCompressed)

        let plain = try VideoDevice(path: videoPath, backend: makeBackend())
        XCTAssertFalse(try plain.formats(.videoCapture).contains { $0.pixelFormat == .mjpeg })
    }

    func testFormatReportsMaximumFrameSizeAsSizeImage() throws {
        let (_, device) = try makeCamera(SimulatedMJPEG(maximumFrameSize: 200_000))
        var format = try device.format(.videoCapture)
        format.pixelFormat = .mjpeg
        format.width = 640
        format.height = 480
        format.planes = []
        let granted = try device.setFormat(format)
        XCTAssertEqual(granted.pixelFormat, .mjpeg)
        XCTAssertEqual(granted.planes.count, 1)
        XCTAssertEqual(granted.planes[0].sizeImage, 200_000)
        XCTAssertEqual(granted.planes[0].bytesPerLine, 0)

        let (_, other) = try makeCamera()
        format.planes = []
        XCTAssertEqual(try other.setFormat(format).planes[0].sizeImage, 640 * 480 * 2, "default: width x height x 2")
    }

    /// Streams `count` frames of 320x180 MJPEG and hands each frame's bytes (bytesused) to `body`.
    private func stream(_ backend: SimulatedV4L2Backend, _ device: VideoDevice, count: Int, faults: [Int: SimulatedFault] = [:],
                        _ body: (BufferDescriptor, UnsafeRawBufferPointer) throws -> Void) throws {
        var format = try device.format(.videoCapture)
        format.pixelFormat = .mjpeg
        format.width = 320
        format.height = 180
        format.planes = []
        _ = try device.setFormat(format)
        _ = try device.startMMAPStreaming(count: 4)
        let mappings = try device.mapAll(count: 4, bufferType: .videoCapture)
        defer { device.unmapAll(mappings) }
        for i in 0..<count {
            if let fault = faults[i] { XCTAssertTrue(backend.injectFault(fault, path: videoPath)) }
            let frame = try device.dequeueFrame()
            let memory = mappings[Int(frame.index)][0]
            let used = min(Int(frame.planes[0].bytesUsed), memory.count)
            try body(frame, UnsafeRawBufferPointer(rebasing: memory[0..<used]))
            try device.queue(try device.queryBuffer(index: frame.index, bufferType: .videoCapture, memory: .mmap))
        }
    }

    func testFramesAreTheEncodedPicturesCyclingThroughVariants() throws {
        let (backend, device) = try makeCamera(SimulatedMJPEG(variants: 3))
        let expected = (0..<3).map { SimulatedJPEG.encode(width: 320, height: 180, variant: $0, subsampling: 2, quality: 85)! }
        XCTAssertNotEqual(expected[0], expected[1], "variants differ")
        var sizes: Set<Int> = []
        try stream(backend, device, count: 7) { frame, bytes in
            XCTAssertEqual(Array(bytes), expected[Int(frame.sequence) % 3], "frame \(frame.sequence)")
            XCTAssertLessThan(bytes.count, 320 * 180 * 2, "bytesused below sizeimage")
            let header = jpegHeader(bytes)
            XCTAssertEqual(header?.0, 320)
            XCTAssertEqual(header?.1, 180)
            XCTAssertEqual(header?.2, 2, "4:2:0")
            sizes.insert(bytes.count)
        }
        XCTAssertGreaterThan(sizes.count, 1, "bytesused varies per frame")
    }

    func testPaddingAndSubsamplingSettings() throws {
        let (backend, device) = try makeCamera(SimulatedMJPEG(subsampling: 1, variants: 1, trailingPadding: 100))
        let picture = SimulatedJPEG.encode(width: 320, height: 180, variant: 0, subsampling: 1, quality: 85)!
        try stream(backend, device, count: 2) { _, bytes in
            XCTAssertEqual(bytes.count, picture.count + 100)
            XCTAssertEqual(Array(bytes.prefix(picture.count)), picture)
            XCTAssertTrue(bytes.suffix(100).allSatisfy { $0 == 0 }, "zero padding after EOI")
            XCTAssertEqual(jpegHeader(bytes)?.2, 1, "4:2:2")
        }
    }

    func testJPEGFaults() throws {
        let (backend, device) = try makeCamera(SimulatedMJPEG(variants: 1))
        let picture = SimulatedJPEG.encode(width: 320, height: 180, variant: 0, subsampling: 2, quality: 85)!
        let other = SimulatedJPEG.encode(width: 320, height: 180, variant: 0, subsampling: 1, quality: 85)!
        var seen: [Int: (BufferDescriptor, [UInt8])] = [:]
        var index = 0
        try stream(backend, device, count: 7,
                   faults: [1: .truncatedJPEG, 2: .missingSOI, 3: .bytesUsedZero, 4: .undecodableJPEG,
                            5: .jpegSubsampling(1), 6: .bytesUsedOverLength]) { frame, bytes in
            seen[index] = (frame, Array(bytes))
            index += 1
        }
        XCTAssertEqual(seen[0]?.1, picture)
        XCTAssertEqual(seen[1]?.1, Array(picture.prefix(picture.count / 2)), "truncated: the first half")
        XCTAssertEqual(seen[2]?.1.prefix(2), [0, 0], "SOI zeroed")
        XCTAssertEqual(seen[2]?.1.dropFirst(2), picture.dropFirst(2))
        XCTAssertEqual(seen[3]?.0.planes[0].bytesUsed, 0)
        let undecodable = try XCTUnwrap(seen[4]?.1)
        XCTAssertEqual(undecodable.prefix(2), [0xFF, 0xD8])
        XCTAssertEqual(undecodable.suffix(2), [0xFF, 0xD9])
        let header = undecodable.withUnsafeBytes { jpegHeader($0) }
        XCTAssertTrue(header == nil || header!.0 == 0, "no picture TurboJPEG can read: \(String(describing: header))")
        XCTAssertEqual(seen[5]?.1, other, "the other subsampling")
        let overlong = try XCTUnwrap(seen[6]?.0)
        XCTAssertEqual(overlong.planes[0].bytesUsed, overlong.planes[0].length + 1)
    }

    func testJPEGFaultsWaitForAnMJPEGFrame() throws {
        // On an uncompressed format the MJPEG faults stay pending and the pattern is unchanged.
        let (backend, device) = try makeCamera()
        _ = try device.startMMAPStreaming(count: 4)
        let mappings = try device.mapAll(count: 4, bufferType: .videoCapture)
        defer { device.unmapAll(mappings) }
        XCTAssertTrue(backend.injectFault(.truncatedJPEG, path: videoPath))
        let frame = try device.dequeueFrame()
        assertPattern(UnsafeRawBufferPointer(mappings[Int(frame.index)][0]), sequence: frame.sequence, plane: 0,
                      count: Int(frame.planes[0].bytesUsed))
        XCTAssertEqual(backend.pendingFaults(path: videoPath).count, 1)
    }
}
