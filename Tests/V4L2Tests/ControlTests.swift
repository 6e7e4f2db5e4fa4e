import SystemPackage
import CV4L2
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// Control enumeration, menus, names, and get/set with the kernel's validation rules.
final class ControlTests: XCTestCase {
    let brightness: UInt32 = 0x0098_0900
    let hue: UInt32 = 0x0098_0903
    let horizontalFlip: UInt32 = 0x0098_0914
    let button: UInt32 = 0x0098_f000
    let integer64: UInt32 = 0x0098_f003
    let menu: UInt32 = 0x0098_f004
    let osdTextMode: UInt32 = 0x00f0_f001

    func testControlsAreEnumeratedWithoutClassesInIdOrder() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let controls = try device.controls()
        XCTAssertEqual(controls.map(\.name), ["Brightness", "Contrast", "Hue", "Horizontal Flip", "Min Number of Capture Buffers",
                                              "Button", "Integer 32 Bits", "Integer 64 Bits", "Menu", "String", "OSD Text Mode"])
        XCTAssertEqual(controls.map(\.id), controls.map(\.id).sorted())
        XCTAssertFalse(controls.contains { $0.type == .controlClass })
        let brightness = try XCTUnwrap(controls.first { $0.id == self.brightness })
        XCTAssertEqual(brightness.type, .integer)
        XCTAssertEqual([brightness.minimum, brightness.maximum, brightness.defaultValue], [0, 255, 128])
        XCTAssertEqual(brightness.step, 1)
        XCTAssertEqual(try XCTUnwrap(controls.first { $0.id == horizontalFlip }).type, .boolean)
        let button = try XCTUnwrap(controls.first { $0.id == self.button })
        XCTAssertEqual(button.type, .button)
        XCTAssertTrue(button.isWriteOnly)
        let minimum = try XCTUnwrap(controls.first { $0.id == ControlID.minimumBuffersForCapture })
        XCTAssertTrue(minimum.isReadOnly)
    }

    func testQueryExtCtrlWithNextCtrlStartsWithTheUserClass() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        var query = v4l2_query_ext_ctrl()
        query.id = 0x8000_0000
        XCTAssertNil(device.raw(CV4L2_VIDIOC_QUERY_EXT_CTRL, &query))
        XCTAssertEqual(query.id, 0x0098_0001)
        XCTAssertEqual(query.type, ControlType.controlClass.rawValue)
        XCTAssertEqual(VideoDeviceStrings.string(query.name), "User Controls")
        query = v4l2_query_ext_ctrl()
        query.id = 0x0098_0902 // no such control, and no NEXT flag
        XCTAssertEqual(device.raw(CV4L2_VIDIOC_QUERY_EXT_CTRL, &query), .invalidArgument)
        query = v4l2_query_ext_ctrl()
        query.id = osdTextMode | 0x8000_0000 // the last one
        XCTAssertEqual(device.raw(CV4L2_VIDIOC_QUERY_EXT_CTRL, &query), .invalidArgument)
    }

    func testQueryCtrlGivesThirtyTwoBitRanges() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        var query = v4l2_queryctrl()
        query.id = hue
        XCTAssertNil(device.raw(CV4L2_VIDIOC_QUERYCTRL, &query))
        XCTAssertEqual([query.minimum, query.maximum, query.step, query.default_value], [-128, 128, 1, 0])
        XCTAssertEqual(VideoDeviceStrings.string(query.name), "Hue")
        query = v4l2_queryctrl()
        query.id = integer64
        XCTAssertNil(device.raw(CV4L2_VIDIOC_QUERYCTRL, &query))
        XCTAssertEqual([query.minimum, query.maximum], [0, 0], "64-bit ranges do not fit QUERYCTRL")
    }

    func testMenuItemsLeaveOutSkippedEntries() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let osd = try XCTUnwrap(try device.control(named: "osd_text_mode"))
        XCTAssertEqual(osd.id, osdTextMode)
        XCTAssertEqual(osd.type, .menu)
        XCTAssertEqual(osd.menuItems.map(\.name), ["All", "Counters Only", "None"])
        XCTAssertEqual(osd.menuItems.map(\.index), [0, 1, 2])
        let menu = try XCTUnwrap(try device.controls().first { $0.id == self.menu })
        XCTAssertEqual(menu.menuItems.map(\.index), [1, 3, 4])
        XCTAssertEqual(menu.menuItems.map(\.name), ["Menu Item 1", "Menu Item 3", "Menu Item 4"])
        var item = v4l2_querymenu()
        item.id = self.menu
        item.index = 2
        XCTAssertEqual(device.raw(CV4L2_VIDIOC_QUERYMENU, &item), .invalidArgument, "a skipped item is EINVAL")
        item.id = brightness
        item.index = 0
        XCTAssertEqual(device.raw(CV4L2_VIDIOC_QUERYMENU, &item), .invalidArgument, "not a menu")
    }

    func testCommandLineNamesFollowV4L2Ctl() throws {
        XCTAssertEqual(ControlInfo.commandLineName(for: "OSD Text Mode"), "osd_text_mode")
        XCTAssertEqual(ControlInfo.commandLineName(for: "Min Number of Capture Buffers"), "min_number_of_capture_buffers")
        XCTAssertEqual(ControlInfo.commandLineName(for: "Integer 32 Bits"), "integer_32_bits")
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        XCTAssertEqual(try device.control(named: "OSD Text Mode")?.id, osdTextMode)
        XCTAssertEqual(try device.control(named: "horizontal_flip")?.id, horizontalFlip)
        XCTAssertNil(try device.control(named: "no_such_control"))
    }

    func testGetAndSetValues() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        XCTAssertEqual(try device.controlValue(brightness), 128)
        try device.setControlValue(brightness, 200)
        XCTAssertEqual(try device.controlValue(brightness), 200)
        XCTAssertEqual(backend.controlValue(path: videoPath, id: brightness), 200)
        try device.setControlValue(osdTextMode, 2, type: .menu)
        XCTAssertEqual(try device.controlValue(osdTextMode), 2)
        try device.setControlValue(horizontalFlip, 7, type: .boolean)
        XCTAssertEqual(try device.controlValue(horizontalFlip), 1, "a boolean becomes 0 or 1")
    }

    func testNegativeThirtyTwoBitValuesComeBackNegative() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.setControlValue(hue, -10)
        XCTAssertEqual(try device.controlValue(hue), -10)
        XCTAssertEqual(try device.controlValue(hue, type: .integer), -10)
    }

    func testSixtyFourBitValues() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.setControlValue(integer64, 1 << 40, type: .integer64)
        XCTAssertEqual(try device.controlValue(integer64, type: .integer64), 1 << 40)
        XCTAssertEqual(try device.controlValue(integer64), 1 << 40)
        try device.setControlValue(integer64, -(1 << 40), type: .integer64)
        XCTAssertEqual(try device.controlValue(integer64, type: .integer64), -(1 << 40))
    }

    func testOutOfRangeIntegersAreClampedLikeTheKernel() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.setControlValue(brightness, 300)
        XCTAssertEqual(try device.controlValue(brightness), 255)
        try device.setControlValue(hue, -1000)
        XCTAssertEqual(try device.controlValue(hue), -128)
    }

    func testOutOfRangeMenuValueIsERANGEAndLeavesTheValue() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        let error = expectError { () throws(V4L2Error) in try device.setControlValue(osdTextMode, 5, type: .menu) }
        XCTAssertEqual(error?.errno, Errno(rawValue: ERANGE))
        XCTAssertEqual(error?.operation, "VIDIOC_S_EXT_CTRLS")
        XCTAssertTrue(error?.detail?.contains("f0f001") ?? false, error?.detail ?? "")
        XCTAssertEqual(try device.controlValue(osdTextMode), 0)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.setControlValue(menu, 2, type: .menu) }?.errno,
                       .invalidArgument, "a skipped menu item is EINVAL")
        XCTAssertEqual(try device.controlValue(menu), 3)
    }

    func testUnknownReadOnlyAndWriteOnlyControls() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend(SimulatedDeviceConfiguration(minimumBuffers: 3)))
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.controlValue(0x0098_0999) }?.errno, .invalidArgument)
        XCTAssertEqual(try device.controlValue(ControlID.minimumBuffersForCapture), 3)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.setControlValue(ControlID.minimumBuffersForCapture, 5) }?.errno,
                       .permissionDenied)
        XCTAssertEqual(expectError { () throws(V4L2Error) in try device.controlValue(button) }?.errno, .permissionDenied)
    }

    func testPressingAButton() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        XCTAssertEqual(backend.buttonPressCount(path: videoPath, id: button), 0)
        try device.setControlValue(button, 1, type: .button)
        try device.setControlValue(button, 0, type: .button)
        XCTAssertEqual(backend.buttonPressCount(path: videoPath, id: button), 2)
    }

    func testExtendedControlsErrorIndexAndAtomicity() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        var list = [v4l2_ext_control(), v4l2_ext_control()]
        list[0].id = brightness
        list[0].value = 10
        list[1].id = 0x0098_0999
        let unknown = list.withUnsafeMutableBufferPointer { buffer -> (Errno?, UInt32) in
            var controls = v4l2_ext_controls()
            controls.count = 2
            controls.controls = buffer.baseAddress
            let errno = device.raw(CV4L2_VIDIOC_S_EXT_CTRLS, &controls)
            return (errno, controls.error_idx)
        }
        XCTAssertEqual(unknown.0, .invalidArgument)
        XCTAssertEqual(unknown.1, 1, "error_idx names the unknown control")
        list[1].id = osdTextMode
        list[1].value = 9
        let invalid = list.withUnsafeMutableBufferPointer { buffer -> (Errno?, UInt32) in
            var controls = v4l2_ext_controls()
            controls.count = 2
            controls.controls = buffer.baseAddress
            let errno = device.raw(CV4L2_VIDIOC_S_EXT_CTRLS, &controls)
            return (errno, controls.error_idx)
        }
        XCTAssertEqual(invalid.0, Errno(rawValue: ERANGE))
        XCTAssertEqual(invalid.1, 2, "a validation failure on set has error_idx = count")
        XCTAssertEqual(try device.controlValue(brightness), 128, "nothing is applied when one control fails")
        // A class other than the controls' is EINVAL.
        list[1].id = hue
        list[1].value = 5
        let wrongClass = list.withUnsafeMutableBufferPointer { buffer -> Errno? in
            var controls = v4l2_ext_controls()
            controls.which = 0x00f0_0000
            controls.count = 2
            controls.controls = buffer.baseAddress
            return device.raw(CV4L2_VIDIOC_S_EXT_CTRLS, &controls)
        }
        XCTAssertEqual(wrongClass, .invalidArgument)
    }

    func testDefaultValuesThroughWhichDefVal() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        try device.setControlValue(brightness, 17)
        var control = v4l2_ext_control()
        control.id = brightness
        let errno = withUnsafeMutablePointer(to: &control) { pointer -> Errno? in
            var controls = v4l2_ext_controls()
            controls.which = 0x0f00_0000 // V4L2_CTRL_WHICH_DEF_VAL
            controls.count = 1
            controls.controls = pointer
            return device.raw(CV4L2_VIDIOC_G_EXT_CTRLS, &controls)
        }
        XCTAssertNil(errno)
        XCTAssertEqual(control.value, 128)
    }

    func testGetAndSetCtrl() throws {
        let device = try VideoDevice(path: videoPath, backend: makeBackend())
        var control = v4l2_control(id: brightness, value: 42)
        XCTAssertNil(device.raw(CV4L2_VIDIOC_S_CTRL, &control))
        control.value = 0
        XCTAssertNil(device.raw(CV4L2_VIDIOC_G_CTRL, &control))
        XCTAssertEqual(control.value, 42)
        var wide = v4l2_control(id: integer64, value: 0)
        XCTAssertEqual(device.raw(CV4L2_VIDIOC_G_CTRL, &wide), .invalidArgument, "G_CTRL cannot carry a 64-bit value")
    }
}

/// C character arrays as strings.
enum VideoDeviceStrings {
    static func string<T>(_ tuple: T) -> String {
        withUnsafeBytes(of: tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}
