/// `enum v4l2_field`: how a frame's lines come from the two fields of an interlaced source,
/// by the names v4l2-ctl uses.
public enum FieldOrder: UInt32, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Let the driver choose.
    case any = 0
    /// Progressive.
    case none = 1
    /// Top field only.
    case top = 2
    /// Bottom field only.
    case bottom = 3
    /// Both fields woven line by line; their temporal order comes from the standard
    /// (top first for 625-line PAL/SECAM, bottom first for 525-line NTSC).
    case interlaced = 4
    /// Both fields one after the other in the buffer, top first.
    case sequentialTopBottom = 5
    /// Both fields one after the other in the buffer, bottom first.
    case sequentialBottomTop = 6
    /// One field per buffer, top and bottom alternating.
    case alternate = 7
    /// Woven, top field first in time.
    case interlacedTopBottom = 8
    /// Woven, bottom field first in time.
    case interlacedBottomTop = 9

    public var description: String {
        switch self {
        case .any: return "any"
        case .none: return "none"
        case .top: return "top"
        case .bottom: return "bottom"
        case .interlaced: return "interlaced"
        case .sequentialTopBottom: return "seq-tb"
        case .sequentialBottomTop: return "seq-bt"
        case .alternate: return "alternate"
        case .interlacedTopBottom: return "interlaced-tb"
        case .interlacedBottomTop: return "interlaced-bt"
        }
    }

    /// The value for a v4l2-ctl name (`interlaced-tb`), or nil.
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = match
    }

    /// The name for a raw `v4l2_field` value (`field 12` for one this enum does not know).
    public static func name(_ raw: UInt32) -> String {
        FieldOrder(rawValue: raw)?.description ?? "field \(raw)"
    }
}
