@testable import FrameDump
import V4L2
import V4L2Simulator
import XCTest

/// `framedump list` and `info` for memory-to-memory devices: the role and the formats on each
/// side in the text and the JSON, and none of it for a capture device.
final class MemoryToMemoryListingTests: XCTestCase {
    private let encoder = MemoryToMemoryDescription(
        queues: .singlePlanar,
        outputFormats: [FormatDescription(.yuv420, bufferType: .videoOutput, description: "Planar YUV 4:2:0"),
                        FormatDescription(.nv12, bufferType: .videoOutput, description: "Y/UV 4:2:0")],
        captureFormats: [FormatDescription(FourCC("FWHT")!, bufferType: .videoCapture, flags: FormatDescription.flagCompressed,
                                           description: "FWHT")])

    func testListNamesTheRoleAndBothSides() throws {
        let summary = MemoryToMemorySummary(encoder)
        XCTAssertEqual(summary.role, .encoder)
        XCTAssertEqual(summary.text, "memory-to-memory encoder (OUTPUT YU12, NV12 -> CAPTURE FWHT)")
        let entry = DeviceListEntry(path: "/dev/video2", number: 2, driver: "vicodec", card: "vicodec", busInfo: "platform:vicodec",
                                    canCapture: false, capabilities: ["Video Memory-to-Memory", "Streaming"], metadataFormat: nil,
                                    error: nil, memoryToMemory: summary)
        XCTAssertEqual(DeviceListing.render([entry]),
                       "/dev/video2: vicodec (driver vicodec, bus platform:vicodec): memory-to-memory encoder (OUTPUT YU12, NV12 -> CAPTURE FWHT) [Video Memory-to-Memory, Streaming]\n")
        let json = FrameDumpJSON.encode([entry])
        XCTAssertTrue(json.contains("\"role\" : \"encoder\""), json)
        XCTAssertTrue(json.contains("\"captureFormats\" : [\n        \"FWHT\""), json)
        XCTAssertEqual(try FrameDumpJSON.decode([DeviceListEntry].self, from: json), [entry])

        let planar = MemoryToMemorySummary(MemoryToMemoryDescription(queues: .multiplanar, outputFormats: [], captureFormats: []))
        XCTAssertNil(planar.role)
        XCTAssertEqual(planar.text, "memory-to-memory device (OUTPUT none -> CAPTURE none, multi-planar)")
    }

    func testCaptureDeviceHasNoMemoryToMemoryPart() throws {
        let backend = SimulatedV4L2Backend(path: "/dev/video0", configuration: SimulatedDeviceConfiguration())
        let entries = DeviceListing.list(paths: ["/dev/video0"], backend: backend)
        XCTAssertNil(entries.first?.memoryToMemory)
        XCTAssertFalse(DeviceListing.render(entries).contains("memory-to-memory"))
        XCTAssertFalse(FrameDumpJSON.encode(entries).contains("memoryToMemory"))
        let report = try DeviceReport.make(device: VideoDevice(path: "/dev/video0", backend: backend))
        XCTAssertNil(report.memoryToMemory)
        XCTAssertFalse(report.render().contains("Memory-to-memory"))
    }

    func testInfoRendersBothQueues() throws {
        let backend = SimulatedV4L2Backend(path: "/dev/video0", configuration: SimulatedDeviceConfiguration())
        var report = try DeviceReport.make(device: VideoDevice(path: "/dev/video0", backend: backend))
        report.canCapture = false
        report.formats = []
        report.currentFormat = nil
        report.memoryToMemory = MemoryToMemoryReport(
            role: .encoder, outputBufferType: "video-output", captureBufferType: "video-capture",
            currentOutputFormat: CurrentFormatReport(format: ImageFormat(bufferType: .videoOutput, width: 640, height: 360, pixelFormat: .yuv420,
                                                                         planes: [PlaneFormat(bytesPerLine: 640, sizeImage: 345_600)]),
                                                     frameInterval: nil),
            outputFormats: [FormatReport(pixelFormat: .yuv420, description: "Planar YUV 4:2:0", sizes: [])],
            currentCaptureFormat: nil,
            captureFormats: [FormatReport(pixelFormat: FourCC("FWHT")!, description: "FWHT", compressed: true, sizes: [])],
            encoderControls: ["V4L2_CID_FWHT_I_FRAME_QP"])
        let text = report.render()
        XCTAssertTrue(text.contains("Can capture   : no (memory-to-memory: both queues below)"), text)
        XCTAssertTrue(text.contains("""
        Memory-to-memory: encoder
          OUTPUT (written by the application), video-output:
            Current format: YU12 640x360, plane 0: bytes per line 640, size image 345600
            'YU12' (Planar YUV 4:2:0)
          CAPTURE (produced by the device), video-capture:
            'FWHT' (FWHT), compressed
          Encoder controls: V4L2_CID_FWHT_I_FRAME_QP
        """), text)
        let decoded = try FrameDumpJSON.decode(DeviceReport.self, from: FrameDumpJSON.encode(report))
        XCTAssertEqual(decoded.memoryToMemory, report.memoryToMemory)
    }
}
