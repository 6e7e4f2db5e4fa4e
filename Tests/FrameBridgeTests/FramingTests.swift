import CV4L2
import FrameBridge
import Foundation
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// The pin's framing (KSALLOCATOR_FRAMING_EX analog) as read from the simulated device.
final class FramingTests: XCTestCase {
    func testSinglePlanarFramingHasOneItemSizedToSizeimage() throws {
        let rig = try SimRig(.singlePlanar, minimumBuffers: 3)
        let framing = rig.pin.framing
        XCTAssertEqual(framing.device, capturePath)
        XCTAssertEqual(framing.bufferType, .videoCapture)
        XCTAssertEqual(framing.pixelFormat, .yuyv)
        XCTAssertEqual(framing.width, 320)
        XCTAssertEqual(framing.height, 180)
        XCTAssertEqual(framing.outputCompression, Fraction(1, 1))
        XCTAssertEqual(framing.countItems, 1)
        XCTAssertEqual(framing.planeSizes, [320 * 180 * 2])
        let item = try XCTUnwrap(framing.items.first)
        XCTAssertEqual(item.plane, 0)
        XCTAssertEqual(item.frameSizeMinimum, Int(rig.pin.format.planes[0].sizeImage))
        XCTAssertEqual(item.frameSizeMinimum, 115_200)
        XCTAssertEqual(item.frameSizeMaximum, 115_200)
        XCTAssertEqual(item.bytesPerLine, 640)
        XCTAssertEqual(item.memoryKinds, [.mmap, .userPointer, .dmabuf])
        XCTAssertEqual(item.framesMinimum, 3, "V4L2_CID_MIN_BUFFERS_FOR_CAPTURE of the simulator")
        XCTAssertEqual(item.framesMaximum, 32)
        XCTAssertEqual(item.alignment, pageSize)
        XCTAssertEqual(pageSize, Int(sysconf(Int32(_SC_PAGESIZE))))
        XCTAssertTrue(item.flags.contains(.acceptsExternalMemory))
        XCTAssertTrue(item.flags.contains(.canGrow))
        XCTAssertTrue(item.flags.contains(.orphanedBuffers), "the simulator reports V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS")
        XCTAssertFalse(item.flags.contains(.dataOffset), "a single-planar queue has no data_offset")
        XCTAssertFalse(item.flags.contains(.cacheHints))
    }

    /// Start-up reads the compressed flag with VIDIOC_ENUM_FMT only up to the pin's format, once:
    /// start() reuses the answer (vivid lists 84 formats; they were enumerated twice per capture).
    func testFramingEnumeratesFormatsOnlyUpToThePinsFormatAndOnlyOnce() throws {
        for (layout, index) in [(Layout.singlePlanar, 0), (.multiPlanar, 3)] {
            let rig = try SimRig(layout)
            XCTAssertEqual(rig.count(CV4L2_VIDIOC_ENUM_FMT), index + 1, "\(layout): \(rig.pin.format.pixelFormat) is entry \(index)")
            XCTAssertFalse(rig.pin.framing.isCompressed)
            try rig.pin.start(rig.selection(.kernelPool))
            XCTAssertTrue(gotFrame(try rig.pin.next()))
            XCTAssertEqual(rig.count(CV4L2_VIDIOC_ENUM_FMT), index + 1, "\(layout): start() enumerated the formats again")
            rig.pin.stop()
        }
    }

    func testMultiPlanarFramingHasAnItemPerPlaneWithDataOffset() throws {
        let rig = try SimRig(.multiPlanar, minimumBuffers: 2)
        let framing = rig.pin.framing
        XCTAssertEqual(framing.bufferType, .videoCaptureMultiplanar)
        XCTAssertEqual(framing.pixelFormat, .nv12m)
        XCTAssertEqual(framing.countItems, 2)
        XCTAssertEqual(framing.items.map(\.plane), [0, 1])
        XCTAssertEqual(framing.items.map(\.frameSizeMinimum), [320 * 180 + 128, 320 * 180 / 2],
                       "plane 0's sizeimage includes the 128-byte data_offset")
        XCTAssertEqual(framing.items.map(\.frameSizeMinimum), rig.pin.format.planes.map { Int($0.sizeImage) })
        XCTAssertEqual(framing.planeSizes, [57_728, 28_800])
        XCTAssertEqual(framing.items.map(\.bytesPerLine), [320, 320])
        XCTAssertEqual(framing.items.map(\.alignment), [pageSize, pageSize])
        XCTAssertEqual(framing.items.map(\.framesMinimum), [2, 2])
        XCTAssertEqual(framing.framesMinimum, 2)
        XCTAssertEqual(framing.framesMaximum, 32)
        XCTAssertTrue(framing.items[0].flags.contains(.dataOffset), "plane 0 may start after data_offset")
        XCTAssertFalse(framing.items[1].flags.contains(.dataOffset))
        XCTAssertEqual(framing.memoryKinds, [.mmap, .userPointer, .dmabuf])
    }

    func testMemoryKindsComeFromTheDeviceConfiguration() throws {
        for layout in Layout.allCases {
            let noUserPointer = try SimRig(layout, memoryKinds: [.mmap, .dmabuf])
            XCTAssertEqual(noUserPointer.pin.framing.memoryKinds, [.mmap, .dmabuf], "\(layout)")
            for item in noUserPointer.pin.framing.items {
                XCTAssertEqual(item.memoryKinds, [.mmap, .dmabuf], "\(layout) plane \(item.plane)")
                XCTAssertTrue(item.flags.contains(.acceptsExternalMemory), "dmabuf import is external memory")
            }
            let mmapOnly = try SimRig(layout, memoryKinds: [.mmap])
            XCTAssertEqual(mmapOnly.pin.framing.memoryKinds, [.mmap], "\(layout)")
            XCTAssertFalse(mmapOnly.pin.framing.items[0].flags.contains(.acceptsExternalMemory), "\(layout)")
            let userPointerOnly = try SimRig(layout, memoryKinds: [.userPointer])
            XCTAssertEqual(userPointerOnly.pin.framing.memoryKinds, [.userPointer], "\(layout)")
        }
    }

    func testFramesMinimumFollowsTheSimulatorAndSetsTheDefaultFrameCount() throws {
        for layout in Layout.allCases {
            for minimum: UInt32 in [1, 3, 6] {
                let rig = try SimRig(layout, minimumBuffers: minimum)
                let framing = rig.pin.framing
                XCTAssertEqual(framing.framesMinimum, Int(minimum), "\(layout)")
                XCTAssertEqual(framing.items.map(\.framesMinimum), Array(repeating: Int(minimum), count: layout.planeCount))
                let expectedCount = max(4, Int(minimum) + 2)
                XCTAssertEqual(AllocatorSelection().resolvedFrameCount(for: framing), expectedCount)
                let result = try rig.pin.start()
                XCTAssertEqual(result.frameCount, expectedCount)
                XCTAssertEqual(rig.queue.bufferCount, expectedCount, "\(layout) minimum \(minimum)")
                XCTAssertEqual(rig.pin.bufferCounts.queued, expectedCount)
                rig.pin.stop()
            }
        }
    }

    func testReadingTheFramingAllocatesNothing() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            _ = rig.pin.framing
            let state = rig.queue
            XCTAssertEqual(state.bufferCount, 0, "\(layout): the framing query left buffers allocated")
            XCTAssertNil(state.owner, "\(layout): REQBUFS(0) gives up ownership of the queue")
            XCTAssertFalse(state.isStreaming)
        }
    }

    func testFramingJSONRoundTrip() throws {
        for layout in Layout.allCases {
            let rig = try SimRig(layout)
            let framing = rig.pin.framing
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let data = try encoder.encode(framing)
            let json = String(decoding: data, as: UTF8.self)
            XCTAssertTrue(json.contains("\"memoryKinds\":[\"mmap\",\"userptr\",\"dmabuf\"]"), json)
            XCTAssertTrue(json.contains("\"frameSizeMinimum\":\(framing.items[0].frameSizeMinimum)"), json)
            XCTAssertTrue(json.contains("\"alignment\":\(pageSize)"), json)
            XCTAssertTrue(json.contains("\"device\":\"\\/dev\\/video0\"") || json.contains("\"device\":\"/dev/video0\""), json)
            if layout.isMultiplanar {
                XCTAssertTrue(json.contains("\"data-offset\""), json)
            }
            XCTAssertTrue(json.contains("\"can-grow\""), json)
            let decoded = try JSONDecoder().decode(AllocatorFraming.self, from: data)
            XCTAssertEqual(decoded, framing, "\(layout)")
            XCTAssertEqual(decoded.items.map(\.flags), framing.items.map(\.flags), "flags survive as names")
            // A second round trip is byte-identical.
            XCTAssertEqual(try encoder.encode(decoded), data)
        }
    }

    /// A device whose CREATE_BUFS does not answer cannot grow, and the framing says so.
    func testCanGrowOnlyWhenCreateBufsAnswers() throws {
        let growing = try SimRig(.singlePlanar)
        XCTAssertTrue(growing.pin.framing.items[0].flags.contains(.canGrow))
        let backend = SimulatedV4L2Backend()
        backend.addDevice(path: capturePath, configuration: Layout.singlePlanar.deviceConfiguration())
        XCTAssertTrue(backend.injectFault(.failNext(request: CV4L2_VIDIOC_CREATE_BUFS, errno: .inappropriateIOCTLForDevice), path: capturePath))
        let device = try VideoDevice(path: capturePath, backend: backend)
        let framing = try AllocatorFraming.query(device: device, bufferType: .videoCapture)
        XCTAssertFalse(framing.items[0].flags.contains(.canGrow), "\(framing.items[0].flags)")
    }
}
