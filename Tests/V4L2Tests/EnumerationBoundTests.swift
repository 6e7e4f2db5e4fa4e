import CV4L2
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// A driver that never answers EINVAL to an enumeration: the enumeration stops at a bound and
/// throws an error naming the device and the ioctl, instead of looping for ever.
final class EnumerationBoundTests: XCTestCase {
    /// The most ioctls a bounded enumeration may make: the bound (1024 entries) and one more.
    let mostCalls = 1025

    func check(_ request: UInt, _ name: String, file: StaticString = #filePath, line: UInt = #line,
               _ enumerate: (VideoDevice) throws(V4L2Error) -> Void) throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        XCTAssertTrue(backend.injectFault(.endlessEnumeration(request: request), path: videoPath))
        let error = expectError({ () throws(V4L2Error) in try enumerate(device) }, file: file, line: line)
        XCTAssertEqual(error?.device, videoPath, file: file, line: line)
        XCTAssertEqual(error?.operation, name, file: file, line: line)
        XCTAssertNil(error?.errno, "FrameBridge's own finding, not the driver's errno", file: file, line: line)
        XCTAssertTrue(error?.description.contains("1024") ?? false, error?.description ?? "", file: file, line: line)
        XCTAssertTrue(error?.description.contains("EINVAL") ?? false, error?.description ?? "", file: file, line: line)
        XCTAssertLessThanOrEqual(backend.ioctlCount(path: videoPath, request: request), mostCalls, file: file, line: line)
    }

    func testEndlessInputListThrowsNamingTheDeviceAndENUMINPUT() throws {
        try check(CV4L2_VIDIOC_ENUMINPUT, "VIDIOC_ENUMINPUT") { device throws(V4L2Error) in _ = try device.inputs() }
    }

    func testEndlessFormatListThrowsNamingTheDeviceAndENUM_FMT() throws {
        try check(CV4L2_VIDIOC_ENUM_FMT, "VIDIOC_ENUM_FMT") { device throws(V4L2Error) in _ = try device.formats(.videoCapture) }
    }

    func testEndlessFormatSearchThrowsNamingTheDeviceAndENUM_FMT() throws {
        // A format the device does not offer: the search walks the whole (endless) list.
        try check(CV4L2_VIDIOC_ENUM_FMT, "VIDIOC_ENUM_FMT") { device throws(V4L2Error) in
            _ = try device.formatDescription(of: FourCC("ABCD")!, .videoCapture)
        }
    }

    func testEndlessFrameSizeListThrowsNamingTheDeviceAndENUM_FRAMESIZES() throws {
        try check(CV4L2_VIDIOC_ENUM_FRAMESIZES, "VIDIOC_ENUM_FRAMESIZES") { device throws(V4L2Error) in
            _ = try device.frameSizes(.yuyv)
        }
    }

    func testEndlessFrameIntervalListThrowsNamingTheDeviceAndENUM_FRAMEINTERVALS() throws {
        try check(CV4L2_VIDIOC_ENUM_FRAMEINTERVALS, "VIDIOC_ENUM_FRAMEINTERVALS") { device throws(V4L2Error) in
            _ = try device.frameIntervals(.yuyv, width: 640, height: 360)
        }
    }

    /// The fault's own check: the device answers past its last entry.
    func testTheSimulatedDriverRepeatsItsFirstEntry() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        let inputs = try device.inputs()
        backend.injectFault(.endlessEnumeration(request: CV4L2_VIDIOC_ENUMINPUT), path: videoPath)
        var input = v4l2_input()
        input.index = UInt32(inputs.count + 10)
        XCTAssertNil(device.raw(CV4L2_VIDIOC_ENUMINPUT, &input))
        XCTAssertEqual(input.index, UInt32(inputs.count + 10))
        XCTAssertEqual(VideoDevice.string(input.name), inputs[0].name)
        XCTAssertEqual(SimulatedFault.endlessEnumeration(request: CV4L2_VIDIOC_ENUMINPUT).description, "endlessEnumeration(VIDIOC_ENUMINPUT)")
    }
}

private extension VideoDevice {
    static func string<T>(_ tuple: T) -> String {
        withUnsafeBytes(of: tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}
