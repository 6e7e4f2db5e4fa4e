import ArgumentParser
import FrameBridge
import FrameDump
import V4L2

// The options whose values are a fixed set: swift-argument-parser parses them, lists them in
// --help ("(values: ...)") and names the option and the allowed values when one is wrong.
// Each takes its values in any case, as the options always did.

extension MemoryKind: ExpressibleByArgument {
    public init?(argument: String) { self.init(name: argument) }
    // The names V4L2 users type (mmap, userptr, dmabuf), not the V4L2_MEMORY_* numbers.
    public static var allValueStrings: [String] { allCases.map(\.description) }
    public static var allValueDescriptions: [String: String] { [:] }
}

extension OutputContainer: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument.lowercased()) }
}

extension DirectIOMode: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument.lowercased()) }
}

extension ErrorFramePolicy: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument.lowercased()) }
}

extension CorruptFramePolicy: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument.lowercased()) }
}

extension FieldOrder: ExpressibleByArgument {
    // v4l2-ctl's names (none, interlaced, interlaced-tb, alternate, ...).
    public init?(argument: String) { self.init(name: argument.lowercased()) }
    public static var allValueStrings: [String] { allCases.map(\.description) }
    public static var allValueDescriptions: [String: String] { [:] }
}

extension SourceChangeAction: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument.lowercased()) }
}

extension ConnectionPreference: ExpressibleByArgument {}
