import Glibc
import V4L2

/// One line of `framedump list`.
public struct DeviceListEntry: Hashable, Sendable, Codable {
    public var path: String
    /// The number in the node's name (`/dev/video3` is 3).
    public var number: Int?
    public var driver: String?
    public var card: String?
    public var busInfo: String?
    /// Whether the node captures video (single- or multi-planar).
    public var canCapture: Bool
    /// The node's capability names, as v4l2-ctl prints them.
    public var capabilities: [String]
    /// The metadata format of a metadata capture node (uvcvideo's second node: `UVCH`).
    public var metadataFormat: String?
    /// Why the node could not be opened or queried, if it could not.
    public var error: String?
    /// A memory-to-memory node (codec, scaler, converter): its role and formats on each side.
    public var memoryToMemory: MemoryToMemorySummary? = nil
}

/// A memory-to-memory node in `framedump list`: what it is and the formats on each side.
public struct MemoryToMemorySummary: Hashable, Sendable, Codable {
    /// `encoder`, `decoder` or `converter`; nil when a queue lists no format.
    public var role: MemoryToMemoryRole?
    /// Whether the queues are multi-planar (V4L2_CAP_VIDEO_M2M_MPLANE).
    public var multiplanar: Bool
    /// The OUTPUT queue's formats: what the application writes into the device.
    public var outputFormats: [FourCC]
    /// The CAPTURE queue's formats: what the device gives back.
    public var captureFormats: [FourCC]

    public init(_ description: MemoryToMemoryDescription) {
        role = description.role
        multiplanar = description.queues.isMultiplanar
        outputFormats = description.outputFormats.map(\.pixelFormat)
        captureFormats = description.captureFormats.map(\.pixelFormat)
    }

    /// `encoder (OUTPUT YU12, NV12 -> CAPTURE FWHT)`.
    public var text: String {
        let what = role.map { "memory-to-memory \($0)" } ?? "memory-to-memory device"
        let output = outputFormats.isEmpty ? "none" : outputFormats.map(\.description).joined(separator: ", ")
        let capture = captureFormats.isEmpty ? "none" : captureFormats.map(\.description).joined(separator: ", ")
        return "\(what) (OUTPUT \(output) -> CAPTURE \(capture)\(multiplanar ? ", multi-planar" : ""))"
    }
}

/// `framedump list`: every video device with card, driver, bus info and whether it captures.
public enum DeviceListing {
    /// The `video<N>` nodes of `directory` (normally `/dev`), sorted by number.
    public static func videoDevicePaths(directory: String = "/dev") -> [String] {
        let names = directoryEntries(directory)
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let paths = names.filter { name in
            name.hasPrefix("video") && name.count > 5 && name.dropFirst(5).allSatisfy(\.isASCIIDigit)
        }.map { "\(base)/\($0)" }
        return sorted(paths)
    }

    /// The names in `directory` (readdir(3); empty when it cannot be opened). Not FileManager:
    /// full Foundation costs every command its load-time relocations and conformance records.
    static func directoryEntries(_ directory: String) -> [String] {
        guard let stream = opendir(directory) else { return [] }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The trailing number of a node's name, as in `/dev/video12`.
    public static func number(of path: String) -> Int? {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        let digits = name.reversed().prefix(while: \.isASCIIDigit)
        return digits.isEmpty ? nil : Int(String(digits.reversed()))
    }

    static func sorted(_ paths: [String]) -> [String] {
        paths.sorted { a, b in
            let na = number(of: a), nb = number(of: b)
            switch (na, nb) {
            case let (x?, y?) where x != y: return x < y
            case (.some, nil): return true
            case (nil, .some): return false
            default: return a < b
            }
        }
    }

    /// Opens each of `paths` through `backend` and reads its capabilities (VIDIOC_QUERYCAP).
    /// A node that cannot be opened is listed with the reason. Sorted by number.
    public static func list(paths: [String], backend: any DeviceBackend = KernelBackend.shared) -> [DeviceListEntry] {
        sorted(paths).map { path in
            do throws(V4L2Error) {
                let device = try VideoDevice(path: path, backend: backend)
                let caps = device.capabilities
                var metadata: String?
                if caps.deviceCapabilities.contains(.metaCapture) {
                    metadata = (try? device.metadataFormat()).map { $0.dataFormat.description }
                }
                var m2m: MemoryToMemorySummary?
                if caps.isMemoryToMemory, let description = try device.memoryToMemoryDescription() {
                    m2m = MemoryToMemorySummary(description)
                }
                return DeviceListEntry(path: path, number: number(of: path), driver: caps.driver, card: caps.card,
                                       busInfo: caps.busInfo, canCapture: caps.canCapture,
                                       capabilities: caps.deviceCapabilities.names, metadataFormat: metadata, error: nil,
                                       memoryToMemory: m2m)
            } catch {
                return DeviceListEntry(path: path, number: number(of: path), driver: nil, card: nil, busInfo: nil,
                                       canCapture: false, capabilities: [], metadataFormat: nil, error: error.description)
            }
        }
    }

    /// The text `framedump list` prints: one line per device.
    public static func render(_ entries: [DeviceListEntry]) -> String {
        guard !entries.isEmpty else { return "no video devices found\n" }
        var text = ""
        for entry in entries {
            if let error = entry.error {
                text += "\(entry.path): cannot open: \(error)\n"
                continue
            }
            var capture = entry.canCapture ? "capture" : "no capture"
            if let m2m = entry.memoryToMemory { capture = m2m.text }
            if !entry.canCapture, entry.capabilities.contains("Metadata Capture") {
                // uvcvideo's second node carries each frame's UVC payload headers, not video.
                let what = entry.metadataFormat == "UVCH" ? ", UVC payload headers" : ""
                capture = "metadata capture (format '\(entry.metadataFormat ?? "?")'\(what); not video)"
            }
            text += "\(entry.path): \(entry.card ?? "?") (driver \(entry.driver ?? "?"), bus \(entry.busInfo ?? "?")): \(capture)"
            text += " [\(entry.capabilities.joined(separator: ", "))]\n"
        }
        return text
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
