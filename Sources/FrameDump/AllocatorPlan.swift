import FrameBridge
import V4L2

/// A dmabuf exporter that stands in for a missing `--dmabuf-from` in `framedump framing`:
/// selection looks only at the allocator's offer, so the framing can be reported without
/// an exporter. It never exports (the allocator is never initialized).
final class UnspecifiedExporter: DMABufExporter {
    var name: String { "no exporter given" }
    func export(count: Int, planeSizes: [Int]) throws(CaptureError) -> [[(fd: Int32, size: Int)]] {
        throw CaptureError(.allocator, "--memory dmabuf needs --dmabuf-from DEVICE or --dmabuf-from vgem")
    }
    func release() {}
}

/// How framedump chooses its allocator: the memory kind asked for is the only candidate, so
/// a rejected candidate is an error and never a silent fall-back to another memory kind.
public enum AllocatorPlan {
    /// The consumer requirements of framedump: it reads frames with the CPU; it takes device
    /// memory only when `--memory dmabuf` is asked for.
    public static func consumer(memory: MemoryKind) -> ConsumerRequirements {
        ConsumerRequirements(needsCPUAccess: true, acceptsDeviceMemory: memory == .dmabuf)
    }

    /// The allocator for `memory`. DMABUF needs `source` (a V4L2 device to export buffers from,
    /// set to `format`, or vgem); without one it is a usage error unless `allowMissingExporter`.
    public static func candidate(memory: MemoryKind, source: DMABufSource?, format: ImageFormat,
                                 backend: any DeviceBackend, allowMissingExporter: Bool = false) throws(FrameDumpError) -> any AllocatorDispatch {
        switch memory {
        case .mmap: return KernelPoolAllocator()
        case .userPointer: return UserPointerAllocator()
        case .dmabuf:
            switch source {
            case .device(let path):
                return DMABufAllocator(exporter: V4L2BufferExporter(path: path, format: format, backend: backend))
            case .vgem(let path):
                return DMABufAllocator(exporter: DRMDumbBufferExporter(path: path))
            case nil:
                if allowMissingExporter { return DMABufAllocator(exporter: UnspecifiedExporter()) }
                throw .usage("--memory dmabuf needs --dmabuf-from DEVICE (another V4L2 device to export buffers from, e.g. /dev/video1) or --dmabuf-from vgem")
            }
        }
    }

    /// The values `--buffers` takes (``OptionValues/bufferCount(_:)`` checks them).
    public static let bufferRange = 1...AllocatorFraming.queueMaximumFrames

    /// The selection: the one candidate, framedump's consumer requirements, the frame count.
    /// A `--buffers` count below the framing's minimum is raised to it, as the driver itself
    /// raises a smaller REQBUFS count (so every count in ``bufferRange`` works).
    public static func selection(candidate: any AllocatorDispatch, memory: MemoryKind, frameCount: Int?,
                                 framing: AllocatorFraming? = nil) -> AllocatorSelection {
        var count = frameCount
        if let wanted = frameCount, let framing { count = max(wanted, framing.framesMinimum) }
        return AllocatorSelection(candidates: [candidate], consumer: consumer(memory: memory), frameCount: count)
    }

    /// libv4l2 answers VIDIOC_REQBUFS only for mmap buffers (its v4l2_ioctl returns EINVAL for
    /// any other memory, whatever the driver can do), so `--libv4l2` with userptr or dmabuf is a
    /// usage error and not a driver failure.
    public static func checkBackend(_ backend: any DeviceBackend, memory: MemoryKind) throws(FrameDumpError) {
        if backend is LibV4L2Backend && memory != .mmap {
            throw .usage("--libv4l2 works only with --memory mmap: libv4l2 accepts VIDIOC_REQBUFS for mmap buffers only (drop --libv4l2 to capture with --memory \(memory))")
        }
    }
}

/// `framedump framing`: the pin's framing requirements, one item per plane, and which
/// allocator selection would take for the memory kind asked for, with the reasons for
/// rejected candidates. Made without initializing any allocator.
public struct FramingReport: Hashable, Sendable, Codable {
    public var device: String
    public var format: CurrentFormatReport
    /// The framing (`pin.framing`), one item per plane.
    public var framing: AllocatorFraming
    public var requestedMemory: MemoryKind
    /// The candidate allocator for the requested memory kind.
    public var candidate: String
    public var consumer: ConsumerRequirements
    /// Whether the candidate fits the framing.
    public var accepted: Bool
    /// The allocator selection took (the default one when the candidate was rejected).
    public var selected: String
    public var fellBackToDefault: Bool
    /// The number of frames selection would ask for.
    public var frameCount: Int
    public var rejections: [AllocatorRejection]
    /// A remark, e.g. that no dmabuf exporter was named.
    public var note: String?

    /// Reads the framing of `pin` and runs selection for `memory`.
    public static func make(pin: CapturePin, memory: MemoryKind, source: DMABufSource?, frameCount: Int?) throws(FrameDumpError) -> FramingReport {
        try make(device: pin.device, format: pin.format, frameInterval: pin.frameInterval, framing: pin.framing,
                 memory: memory, source: source, frameCount: frameCount)
    }

    /// Runs selection for `memory` on a framing read without a pin (``CapturePin/proposedFraming(device:configuration:)``).
    public static func make(device: VideoDevice, format: ImageFormat, frameInterval: Fraction?, framing: AllocatorFraming,
                            memory: MemoryKind, source: DMABufSource?, frameCount: Int?) throws(FrameDumpError) -> FramingReport {
        let candidate = try AllocatorPlan.candidate(memory: memory, source: source, format: format,
                                                    backend: device.backend, allowMissingExporter: true)
        let selection = AllocatorPlan.selection(candidate: candidate, memory: memory, frameCount: frameCount, framing: framing)
        let result = selection.select(framing: framing)
        let accepted = result.rejections.isEmpty && !result.fellBackToDefault
        return FramingReport(device: device.path, format: CurrentFormatReport(format: format, frameInterval: frameInterval),
                             framing: framing, requestedMemory: memory, candidate: candidate.name,
                             consumer: selection.consumer, accepted: accepted, selected: result.chosen.name,
                             fellBackToDefault: result.fellBackToDefault, frameCount: result.frameCount,
                             rejections: result.rejections,
                             note: memory == .dmabuf && source == nil ? "no --dmabuf-from given: capture would need one" : nil)
    }

    /// The text `framedump framing` prints.
    public func render() -> String {
        var text = "Framing of \(device): \(framing.pixelFormat) \(framing.width)x\(framing.height) (\(framing.bufferType)), "
        text += "\(framing.countItems) item(s), output compression \(framing.outputCompression)"
        text += framing.isCompressed ? " (compressed: frame sizes vary up to sizeimage)\n" : " (uncompressed)\n"
        for item in framing.items {
            text += "  plane \(item.plane):\n"
            text += "    memory kinds   : \(item.memoryKinds.map(\.description).joined(separator: ", "))\n"
            text += "    frames         : \(item.framesMinimum)...\(item.framesMaximum)\n"
            text += "    frame size     : \(item.frameSizeMinimum)...\(item.frameSizeMaximum) bytes\n"
            text += "    bytes per line : \(item.bytesPerLine)\n"
            text += "    alignment      : \(item.alignment)\n"
            text += "    flags          : \(item.flags.names.isEmpty ? "none" : item.flags.names.joined(separator: ", "))\n"
        }
        text += "Consumer: CPU access \(consumer.needsCPUAccess ? "needed" : "not needed"), device memory \(consumer.acceptsDeviceMemory ? "accepted" : "not accepted")\n"
        text += "Allocator for \(requestedMemory): \(candidate): \(accepted ? "accepted" : "rejected"), \(frameCount) frames\n"
        for rejection in rejections {
            text += "  rejected \(rejection.allocator): \(rejection.reason)\n"
        }
        if !accepted {
            text += "  selection would fall back to \(selected); framedump capture --memory \(requestedMemory) fails instead\n"
        }
        if let note { text += "Note: \(note)\n" }
        return text
    }
}
