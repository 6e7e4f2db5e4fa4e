import SystemPackage
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// One control of a simulated device.
struct SimulatedControl {
    let id: UInt32
    let type: ControlType
    let name: String
    let minimum: Int64
    let maximum: Int64
    let step: UInt64
    let defaultValue: Int64
    let flags: UInt32
    /// Menu item names from index `minimum`; nil marks a skipped item.
    let menu: [String?]
    var value: Int64
    var presses = 0

    init(id: UInt32, type: ControlType, name: String, minimum: Int64 = 0, maximum: Int64 = 0, step: UInt64 = 0,
         defaultValue: Int64 = 0, flags: UInt32 = 0, menu: [String?] = []) {
        self.id = id
        self.type = type
        self.name = name
        self.minimum = minimum
        self.maximum = maximum
        self.step = step
        self.defaultValue = defaultValue
        self.flags = flags
        self.menu = menu
        self.value = defaultValue
    }

    static let flagReadOnly: UInt32 = 0x0004
    static let flagSlider: UInt32 = 0x0020
    static let flagWriteOnly: UInt32 = 0x0040
    static let flagVolatile: UInt32 = 0x0080
    static let flagExecuteOnWrite: UInt32 = 0x0200

    var elementSize: UInt32 {
        switch type {
        case .integer64: return 8
        case .controlClass: return 0
        case .string: return UInt32(maximum + 1)
        default: return 4
        }
    }

    /// The control class (`V4L2_CTRL_ID2WHICH`).
    var controlClass: UInt32 { id & 0x0fff_0000 }

    /// Checks and adjusts a new value as the kernel's `std_validate` does: integers are
    /// clamped and rounded to the step, booleans become 0 or 1, menus out of range are
    /// ERANGE and skipped items EINVAL, buttons take any value.
    func validate(_ value: Int64) -> Result<Int64, Errno> {
        switch type {
        case .integer, .integer64:
            var value = value
            let halfStep = Int64(step / 2)
            if maximum >= 0 && value >= maximum - halfStep {
                value = maximum
            } else {
                value = value > Int64.max - halfStep ? Int64.max : value + halfStep
            }
            value = min(max(value, minimum), maximum)
            // The offset from the minimum as an unsigned number, as the kernel's macro does.
            let offset = UInt64(bitPattern: value &- minimum)
            let stepValue = max(step, 1)
            return .success(minimum &+ Int64(bitPattern: offset / stepValue * stepValue))
        case .boolean:
            return .success(value != 0 ? 1 : 0)
        case .menu, .integerMenu:
            guard value >= minimum && value <= maximum else { return .failure(Errno(rawValue: ERANGE)) }
            guard let item = menu[Int(value - minimum)], !item.isEmpty else { return .failure(.invalidArgument) }
            return .success(value)
        case .button, .controlClass:
            return .success(0)
        default:
            return .failure(.invalidArgument)
        }
    }

    /// The controls of a device: vivid's classes and a few of its controls.
    static func standardSet(minimumBuffers: UInt32) -> [SimulatedControl] {
        [
            SimulatedControl(id: 0x0098_0001, type: .controlClass, name: "User Controls",
                             flags: flagReadOnly | flagWriteOnly),
            SimulatedControl(id: 0x0098_0900, type: .integer, name: "Brightness",
                             minimum: 0, maximum: 255, step: 1, defaultValue: 128, flags: flagSlider),
            SimulatedControl(id: 0x0098_0901, type: .integer, name: "Contrast",
                             minimum: 0, maximum: 255, step: 1, defaultValue: 128, flags: flagSlider),
            SimulatedControl(id: 0x0098_0903, type: .integer, name: "Hue",
                             minimum: -128, maximum: 128, step: 1, defaultValue: 0, flags: flagSlider),
            SimulatedControl(id: 0x0098_0914, type: .boolean, name: "Horizontal Flip",
                             minimum: 0, maximum: 1, step: 1, defaultValue: 0),
            SimulatedControl(id: ControlID.minimumBuffersForCapture, type: .integer, name: "Min Number of Capture Buffers",
                             minimum: 1, maximum: 32, step: 1, defaultValue: Int64(minimumBuffers),
                             flags: flagReadOnly | flagVolatile),
            SimulatedControl(id: 0x0098_f000, type: .button, name: "Button",
                             flags: flagWriteOnly | flagExecuteOnWrite),
            SimulatedControl(id: 0x0098_f002, type: .integer, name: "Integer 32 Bits",
                             minimum: -0x8000_0000, maximum: 0x7fff_ffff, step: 1, defaultValue: 0),
            SimulatedControl(id: 0x0098_f003, type: .integer64, name: "Integer 64 Bits",
                             minimum: Int64.min, maximum: Int64.max, step: 1, defaultValue: 0),
            SimulatedControl(id: 0x0098_f004, type: .menu, name: "Menu",
                             minimum: 1, maximum: 4, step: 0, defaultValue: 3,
                             menu: ["Menu Item 1", nil, "Menu Item 3", "Menu Item 4"]),
            // vivid's string control (min/max are the length in characters).
            SimulatedControl(id: 0x0098_f005, type: .string, name: "String",
                             minimum: 2, maximum: 4, step: 1),
            SimulatedControl(id: 0x00f0_0001, type: .controlClass, name: "Vivid Controls",
                             flags: flagReadOnly | flagWriteOnly),
            SimulatedControl(id: 0x00f0_f001, type: .menu, name: "OSD Text Mode",
                             minimum: 0, maximum: 2, step: 0, defaultValue: 0,
                             menu: ["All", "Counters Only", "None"]),
        ]
    }
}
