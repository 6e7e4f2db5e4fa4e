/// The type of a control (`enum v4l2_ctrl_type`).
public enum ControlType: UInt32, Sendable, Hashable, Codable, CustomStringConvertible {
    case integer = 1
    case boolean = 2
    case menu = 3
    case button = 4
    case integer64 = 5
    case controlClass = 6
    case string = 7
    case bitmask = 8
    case integerMenu = 9
    case unknown = 0

    public var description: String {
        switch self {
        case .integer: return "int"
        case .boolean: return "bool"
        case .menu: return "menu"
        case .button: return "button"
        case .integer64: return "int64"
        case .controlClass: return "ctrl_class"
        case .string: return "str"
        case .bitmask: return "bitmask"
        case .integerMenu: return "intmenu"
        case .unknown: return "unknown"
        }
    }

    /// Whether the value is a plain number that G/S_EXT_CTRLS carry in `value`/`value64`.
    public var isNumeric: Bool {
        switch self {
        case .integer, .boolean, .menu, .integer64, .bitmask, .integerMenu, .button: return true
        default: return false
        }
    }
}

/// One entry of a menu control (VIDIOC_QUERYMENU).
public struct ControlMenuItem: Hashable, Sendable, Codable {
    public var index: UInt32
    /// The item's name (menu) or its value as text (integer menu).
    public var name: String
}

/// A control as VIDIOC_QUERY_EXT_CTRL describes it.
public struct ControlInfo: Hashable, Sendable, Codable {
    public var id: UInt32
    public var type: ControlType
    /// The driver's name, for example `OSD Text Mode`.
    public var name: String
    public var minimum: Int64
    public var maximum: Int64
    public var step: UInt64
    public var defaultValue: Int64
    public var flags: UInt32
    public var menuItems: [ControlMenuItem]

    /// The name v4l2-ctl uses for it (`osd_text_mode`): lower case, each run of other
    /// characters between letters and digits turned into one underscore.
    public var commandLineName: String { ControlInfo.commandLineName(for: name) }

    public static func commandLineName(for name: String) -> String {
        var result = ""
        var pendingUnderscore = false
        for scalar in name.unicodeScalars {
            let isAlphanumeric = scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar))
            if isAlphanumeric {
                if pendingUnderscore { result.append("_") }
                pendingUnderscore = false
                result.unicodeScalars.append(contentsOf: String(scalar).lowercased().unicodeScalars)
            } else if !result.isEmpty {
                pendingUnderscore = true
            }
        }
        return result
    }

    public static let flagDisabled: UInt32 = 0x0001
    public static let flagReadOnly: UInt32 = 0x0004
    public static let flagInactive: UInt32 = 0x0010
    public static let flagWriteOnly: UInt32 = 0x0040

    public var isDisabled: Bool { flags & ControlInfo.flagDisabled != 0 }
    public var isReadOnly: Bool { flags & ControlInfo.flagReadOnly != 0 }
    public var isWriteOnly: Bool { flags & ControlInfo.flagWriteOnly != 0 || type == .button }
}

/// Well-known control ids.
public enum ControlID {
    /// V4L2_CID_MIN_BUFFERS_FOR_CAPTURE.
    public static let minimumBuffersForCapture: UInt32 = 0x0098_0927
}
