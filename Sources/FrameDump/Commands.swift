import FrameBridge
import V4L2

/// The library side of framedump's read-only commands.
public enum FrameDumpCommands {
    /// Opens `path` through `backend`; errors name the device and the call.
    public static func open(_ path: String, backend: any DeviceBackend) throws(FrameDumpError) -> VideoDevice {
        do {
            return try VideoDevice(path: path, backend: backend)
        } catch {
            throw FrameDumpError(error)
        }
    }

    /// `framedump list`.
    public static func list(directory: String = "/dev", backend: any DeviceBackend = KernelBackend.shared) -> [DeviceListEntry] {
        DeviceListing.list(paths: DeviceListing.videoDevicePaths(directory: directory), backend: backend)
    }

    /// `framedump info`.
    public static func info(path: String, backend: any DeviceBackend = KernelBackend.shared) throws(FrameDumpError) -> DeviceReport {
        try DeviceReport.make(device: open(path, backend: backend))
    }

    /// `framedump framing`: applies the format options to the pin, reads its framing and runs
    /// selection for `memory`, without initializing any allocator.
    public static func framing(path: String, backend: any DeviceBackend = KernelBackend.shared, memory: MemoryKind = .mmap,
                               source: DMABufSource? = nil, buffers: Int? = nil,
                               format: FormatOptions = FormatOptions()) throws(FrameDumpError) -> FramingReport {
        try AllocatorPlan.checkBackend(backend, memory: memory)
        if memory != .dmabuf, let source {
            throw .usage("--dmabuf-from \(source) is only used with --memory dmabuf")
        }
        let device = try open(path, backend: backend)
        try format.checkControls(on: device)
        // Read-only (TRY_FMT, CREATE_BUFS(0)): works while another process streams.
        let proposed: (format: ImageFormat, frameInterval: Fraction?, framing: AllocatorFraming)
        do {
            proposed = try CapturePin.proposedFraming(device: device, configuration: format.pinConfiguration())
        } catch {
            throw FrameDumpError(error)
        }
        return try FramingReport.make(device: device, format: proposed.format, frameInterval: proposed.frameInterval,
                                      framing: proposed.framing, memory: memory, source: source, frameCount: buffers)
    }
}
