import V4L2

/// How a ``MemoryToMemoryConnection`` hands captured frames to the device's OUTPUT queue: the
/// allocator of the connection, as AVStream's graph manager picks one per pin connection.
public enum ConnectionKind: String, Hashable, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// The capture queue's own MMAP buffers, exported as dmabufs (VIDIOC_EXPBUF) and imported by
    /// the device's OUTPUT queue (V4L2_MEMORY_DMABUF): no copy.
    case captureExported = "capture-dmabuf"
    /// The device's OUTPUT buffers (MMAP), exported as dmabufs and imported by the capture queue:
    /// the camera writes straight into the device's memory. No copy.
    case deviceExported = "device-dmabuf"
    /// The user-space fallback: the CPU copies each frame into the device's own MMAP buffers,
    /// line by line when the two sides' bytesperline differ.
    case copy

    public var description: String { rawValue }

    /// Whether the frames cross without a copy (a kernel-mode connection's analog).
    public var isZeroCopy: Bool { self != .copy }
}

/// Which connection kinds a caller allows (`framedump --connection`).
public enum ConnectionPreference: String, Hashable, Sendable, Codable, CaseIterable {
    /// The dmabuf kinds first, the copy when neither fits.
    case auto
    /// A dmabuf kind or an error: no copy.
    case dmabuf
    /// The copy only.
    case copy
    /// ``ConnectionKind/captureExported`` only.
    case captureDMABuf = "capture-dmabuf"
    /// ``ConnectionKind/deviceExported`` only.
    case deviceDMABuf = "device-dmabuf"

    /// The candidates, in the order they are checked.
    public var candidates: [ConnectionKind] {
        switch self {
        case .auto: return [.captureExported, .deviceExported, .copy]
        case .dmabuf: return [.captureExported, .deviceExported]
        case .copy: return [.copy]
        case .captureDMABuf: return [.captureExported]
        case .deviceDMABuf: return [.deviceExported]
        }
    }
}

/// One end of a connection as selection sees it: the queue's framing and its format.
public struct ConnectionEnd: Hashable, Sendable {
    public var framing: AllocatorFraming
    public var format: ImageFormat
    /// The memory kind this end is held to, when it is (a capture pin asked for USERPTR).
    public var requiredMemory: MemoryKind?
    /// The frames this end will have (its buffer count).
    public var frameCount: Int

    public init(framing: AllocatorFraming, format: ImageFormat, requiredMemory: MemoryKind? = nil, frameCount: Int) {
        self.framing = framing
        self.format = format
        self.requiredMemory = requiredMemory
        self.frameCount = frameCount
    }

    /// Bytes per line of each plane.
    var bytesPerLine: [Int] { framing.items.map(\.bytesPerLine) }
    /// sizeimage of each plane.
    var planeSizes: [Int] { framing.items.map(\.bufferSize) }
}

/// A connection kind that was not chosen, and why.
public struct ConnectionRejection: Hashable, Sendable, Codable, CustomStringConvertible {
    public var kind: ConnectionKind
    public var reason: String
    public var description: String { "\(kind): \(reason)" }
}

/// The outcome of connection selection.
public struct ConnectionSelectionResult: Hashable, Sendable, Codable {
    /// The kind chosen; nil when every candidate was rejected.
    public var chosen: ConnectionKind?
    /// Every rejected candidate with its reason, in the order they were checked.
    public var rejections: [ConnectionRejection]
    /// Why the chosen kind was chosen, in one sentence.
    public var why: String
}

/// Chooses a connection kind: each candidate is checked against both ends' framing (memory
/// kinds, plane count, bytesperline, sizeimage, buffer counts); a rejected one gets its reason
/// and is never set up. Pure: it reads the framings and touches no device.
public struct ConnectionSelection: Sendable {
    public var preference: ConnectionPreference

    public init(preference: ConnectionPreference = .auto) {
        self.preference = preference
    }

    /// Why `kind` cannot connect `source` (the capture queue) to `sink` (the device's OUTPUT
    /// queue), or nil when it can.
    public func rejectionReason(_ kind: ConnectionKind, source: ConnectionEnd, sink: ConnectionEnd) -> String? {
        let from = source.framing.device, to = sink.framing.device
        if source.format.pixelFormat != sink.format.pixelFormat {
            return "\(from) gives \(source.format.pixelFormat) but \(to) takes \(sink.format.pixelFormat) on OUTPUT; a connection does not convert"
        }
        if source.format.width != sink.format.width || source.format.height != sink.format.height {
            return "\(from) gives \(source.format.width)x\(source.format.height) but \(to) is set to \(sink.format.width)x\(sink.format.height)"
        }
        let sourcePlanes = source.framing.items.count, sinkPlanes = sink.framing.items.count
        if sourcePlanes != sinkPlanes {
            return "\(from) has \(sourcePlanes) plane(s) per buffer but \(to) has \(sinkPlanes)"
        }
        switch kind {
        case .captureExported, .deviceExported:
            let (exporter, importer) = kind == .captureExported ? (source, sink) : (sink, source)
            let exporterName = exporter.framing.device, importerName = importer.framing.device
            if let required = exporter.requiredMemory, required != .mmap {
                return "\(exporterName) is set to \(required) memory; VIDIOC_EXPBUF exports MMAP buffers only"
            }
            if !exporter.framing.memoryKinds.contains(.mmap) {
                return "\(exporterName) has no MMAP buffers to export (it supports \(Self.kinds(exporter)))"
            }
            if let required = importer.requiredMemory, required != .dmabuf {
                return "\(importerName) is set to \(required) memory; importing needs DMABUF"
            }
            if !importer.framing.memoryKinds.contains(.dmabuf) {
                return "\(importerName) does not import dmabufs (V4L2_MEMORY_DMABUF; it supports \(Self.kinds(importer)))"
            }
            // The device reads the frame in the layout its own format says: the lines must be
            // as long on both sides, and each buffer large enough for the side that reads it.
            if source.bytesPerLine != sink.bytesPerLine {
                return "bytesperline \(Self.list(source.bytesPerLine)) on \(from) but \(to) takes \(Self.list(sink.bytesPerLine)); the device would read the lines at the wrong place"
            }
            for (plane, (given, needed)) in zip(exporter.planeSizes, importer.planeSizes).enumerated() where given < needed {
                return "\(exporterName)'s buffers hold \(given) bytes in plane \(plane) but \(importerName) needs \(needed) (sizeimage)"
            }
            // One buffer index on both sides: the importer needs a slot for every exported buffer.
            let count = exporter.frameCount
            if count > importer.framing.framesMaximum {
                return "\(count) buffers to share but \(importerName) takes at most \(importer.framing.framesMaximum)"
            }
            if count < importer.framing.framesMinimum {
                return "\(count) buffers to share but \(importerName) needs at least \(importer.framing.framesMinimum)"
            }
            return nil
        case .copy:
            if let required = source.requiredMemory, required == .dmabuf {
                return "\(from) is set to DMABUF memory from an exporter of its own; the copy reads MMAP or USERPTR frames"
            }
            if !sink.framing.memoryKinds.contains(.mmap) {
                return "\(to) has no MMAP buffers to copy into (it supports \(Self.kinds(sink)))"
            }
            // A line-by-line copy needs to know where the lines are: one component per plane
            // (packed formats, or the M variants), or the same layout on both sides.
            if source.bytesPerLine != sink.bytesPerLine, !source.format.pixelFormat.isOnePlanePerComponentLayout(planes: sourcePlanes) {
                return "bytesperline \(Self.list(source.bytesPerLine)) on \(from) and \(Self.list(sink.bytesPerLine)) on \(to) differ, and \(source.format.pixelFormat) keeps several components in one plane"
            }
            return nil
        }
    }

    /// Checks the candidates in order; the first that fits is chosen.
    public func select(source: ConnectionEnd, sink: ConnectionEnd) -> ConnectionSelectionResult {
        var rejections: [ConnectionRejection] = []
        for kind in preference.candidates {
            if let reason = rejectionReason(kind, source: source, sink: sink) {
                rejections.append(ConnectionRejection(kind: kind, reason: reason))
                continue
            }
            let why: String
            switch kind {
            case .captureExported:
                why = "both ends agree on the layout; \(source.framing.device)'s MMAP buffers are exported and \(sink.framing.device) imports them: no copy"
            case .deviceExported where rejections.isEmpty:
                why = "asked for; \(sink.framing.device)'s OUTPUT buffers are exported and \(source.framing.device) captures into them: no copy"
            case .deviceExported:
                why = "\(sink.framing.device)'s OUTPUT buffers are exported and \(source.framing.device) captures into them: no copy"
            case .copy:
                why = rejections.isEmpty ? "a copy was asked for" : "no zero-copy kind fits (see the rejections); each frame is copied into \(sink.framing.device)'s buffers"
            }
            return ConnectionSelectionResult(chosen: kind, rejections: rejections, why: why)
        }
        return ConnectionSelectionResult(chosen: nil, rejections: rejections,
                                         why: "no candidate fits with --connection \(preference.rawValue)")
    }

    private static func kinds(_ end: ConnectionEnd) -> String {
        end.framing.memoryKinds.isEmpty ? "none" : end.framing.memoryKinds.map(\.description).joined(separator: ", ")
    }

    private static func list(_ values: [Int]) -> String {
        values.count == 1 ? "\(values[0])" : "[" + values.map(String.init).joined(separator: ", ") + "]"
    }
}

extension FourCC {
    /// Whether each plane of a buffer with `planes` planes holds one component in whole lines, so
    /// a copy can go line by line with each side's bytesperline: packed formats (YUYV, RGB3,
    /// GREY, ...) in one plane, and multi-planar layouts with one plane per component.
    func isOnePlanePerComponentLayout(planes: Int) -> Bool {
        let planarInOnePlane: Set<String> = ["YU12", "YV12", "NV12", "NV21", "NV16", "NV61", "NV24", "NV42", "422P", "411P", "YU16", "YV16", "YU24", "YV24"]
        return planes > 1 || !planarInOnePlane.contains(description)
    }
}
