import FrameBridge
import V4L2
import XCTest

/// Connection selection against both ends' framing: each kind is checked for memory kinds,
/// plane count, bytesperline, sizeimage and buffer counts, and a rejected one has its reason.
/// The real drivers' cases (vivid into vicodec and vim2m) are VividMemoryToMemoryConnectionTests.
final class ConnectionSelectionTests: XCTestCase {
    func end(_ device: String, _ bufferType: BufferType, kinds: [MemoryKind] = [.mmap, .userPointer, .dmabuf],
             pixelFormat: String = "YUYV", bytesPerLine: [Int] = [1280], sizes: [Int] = [460_800],
             framesMaximum: Int = 32, required: MemoryKind? = nil, frames: Int = 4) -> ConnectionEnd {
        let items = zip(bytesPerLine, sizes).enumerated().map { plane, pair in
            FramingItem(plane: plane, memoryKinds: kinds, framesMinimum: 1, framesMaximum: framesMaximum,
                        frameSizeMinimum: pair.1, frameSizeMaximum: pair.1, bytesPerLine: pair.0, alignment: 1, flags: [])
        }
        let framing = AllocatorFraming(device: device, bufferType: bufferType, pixelFormat: FourCC(pixelFormat)!, width: 640, height: 360, items: items)
        let format = ImageFormat(bufferType: bufferType, width: 640, height: 360, pixelFormat: FourCC(pixelFormat)!,
                                 planes: zip(bytesPerLine, sizes).map { PlaneFormat(bytesPerLine: UInt32($0), sizeImage: UInt32($1)) })
        return ConnectionEnd(framing: framing, format: format, requiredMemory: required, frameCount: frames)
    }

    var camera: ConnectionEnd { end("/dev/video0", .videoCapture) }
    var encoder: ConnectionEnd { end("/dev/video1", .videoOutput) }

    func testMatchingEndsChooseTheCaptureBuffersExportedFirst() {
        let result = ConnectionSelection().select(source: camera, sink: encoder)
        XCTAssertEqual(result.chosen, .captureExported)
        XCTAssertEqual(result.rejections, [])
    }

    func testADeviceThatImportsNoDMABufFallsBackToItsBuffersExported() {
        let sink = end("/dev/video1", .videoOutput, kinds: [.mmap])
        let result = ConnectionSelection().select(source: camera, sink: sink)
        XCTAssertEqual(result.chosen, .deviceExported)
        XCTAssertEqual(result.rejections.map(\.kind), [.captureExported])
        XCTAssertTrue(result.rejections[0].reason.contains("/dev/video1 does not import dmabufs"), result.rejections[0].reason)
    }

    func testNoDMABufOnEitherSideFallsBackToTheCopy() {
        let source = end("/dev/video0", .videoCapture, kinds: [.mmap, .userPointer])
        let sink = end("/dev/video1", .videoOutput, kinds: [.mmap])
        let result = ConnectionSelection().select(source: source, sink: sink)
        XCTAssertEqual(result.chosen, .copy)
        XCTAssertEqual(result.rejections.map(\.kind), [.captureExported, .deviceExported])
        XCTAssertTrue(result.rejections[1].reason.contains("/dev/video0 does not import dmabufs"), result.rejections[1].reason)
        XCTAssertTrue(result.why.contains("no zero-copy kind fits"))
    }

    func testDMABufOnlyWithNoFittingKindChoosesNothingWithEveryReason() {
        let source = end("/dev/video0", .videoCapture, bytesPerLine: [1536], sizes: [552_960])
        let result = ConnectionSelection(preference: .dmabuf).select(source: source, sink: encoder)
        XCTAssertNil(result.chosen)
        XCTAssertEqual(result.rejections.count, 2)
        for rejection in result.rejections {
            XCTAssertTrue(rejection.reason.contains("bytesperline 1536 on /dev/video0 but /dev/video1 takes 1280"), rejection.reason)
        }
    }

    func testAnExporterWhoseBuffersAreTooSmallForTheImporterIsRejected() {
        let sink = end("/dev/video1", .videoOutput, sizes: [500_000])
        let reason = ConnectionSelection().rejectionReason(.captureExported, source: camera, sink: sink)
        XCTAssertEqual(reason, "/dev/video0's buffers hold 460800 bytes in plane 0 but /dev/video1 needs 500000 (sizeimage)")
    }

    func testMoreBuffersThanTheImporterTakesAreRejected() {
        let sink = end("/dev/video1", .videoOutput, framesMaximum: 3)
        let reason = ConnectionSelection().rejectionReason(.captureExported, source: camera, sink: sink)
        XCTAssertEqual(reason, "4 buffers to share but /dev/video1 takes at most 3")
    }

    func testPlaneCountsAndFormatsMustAgreeForEveryKind() {
        let twoPlanes = end("/dev/video0", .videoCaptureMultiplanar, pixelFormat: "NM12", bytesPerLine: [640, 640], sizes: [230_400, 115_200])
        let onePlane = end("/dev/video1", .videoOutput, pixelFormat: "NM12", bytesPerLine: [640], sizes: [345_600])
        for kind in ConnectionKind.allCases {
            XCTAssertEqual(ConnectionSelection().rejectionReason(kind, source: twoPlanes, sink: onePlane),
                           "/dev/video0 has 2 plane(s) per buffer but /dev/video1 has 1", "\(kind)")
        }
        let rgb = end("/dev/video1", .videoOutput, pixelFormat: "RGB3")
        XCTAssertTrue(ConnectionSelection().rejectionReason(.copy, source: camera, sink: rgb)?.contains("a connection does not convert") == true)
    }

    func testUserMemoryCannotBeExportedNorImportIntoAndTheCopyTakesIt() {
        let source = end("/dev/video0", .videoCapture, required: .userPointer)
        let result = ConnectionSelection().select(source: source, sink: encoder)
        XCTAssertEqual(result.chosen, .copy)
        XCTAssertEqual(result.rejections.map(\.reason), [
            "/dev/video0 is set to userptr memory; VIDIOC_EXPBUF exports MMAP buffers only",
            "/dev/video0 is set to userptr memory; importing needs DMABUF",
        ])
    }

    func testTheCopyRepacksPackedLinesButNotSeveralComponentsInOnePlane() {
        let padded = end("/dev/video0", .videoCapture, bytesPerLine: [1536], sizes: [552_960])
        XCTAssertNil(ConnectionSelection().rejectionReason(.copy, source: padded, sink: encoder))
        let planar = end("/dev/video0", .videoCapture, pixelFormat: "YU12", bytesPerLine: [768], sizes: [414_720])
        let sink = end("/dev/video1", .videoOutput, pixelFormat: "YU12", bytesPerLine: [640], sizes: [345_600])
        XCTAssertTrue(ConnectionSelection().rejectionReason(.copy, source: planar, sink: sink)?.contains("keeps several components in one plane") == true)
    }

    func testEachPreferenceChecksItsOwnCandidates() {
        XCTAssertEqual(ConnectionPreference.auto.candidates, [.captureExported, .deviceExported, .copy])
        XCTAssertEqual(ConnectionPreference.dmabuf.candidates, [.captureExported, .deviceExported])
        XCTAssertEqual(ConnectionPreference.copy.candidates, [.copy])
        XCTAssertEqual(ConnectionPreference.deviceDMABuf.candidates, [.deviceExported])
        XCTAssertEqual(ConnectionSelection(preference: .deviceDMABuf).select(source: camera, sink: encoder).chosen, .deviceExported)
    }
}
