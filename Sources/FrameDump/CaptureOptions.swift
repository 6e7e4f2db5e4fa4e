import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// The format options shared by `framing` and `capture`: input, pixel format, size, rate, controls.
public struct FormatOptions: Sendable {
    public var input: UInt32?
    public var pixelFormat: FourCC?
    public var width: UInt32?
    public var height: UInt32?
    public var framesPerSecond: Double?
    public var controls: [ControlSetting]
    /// `--field`: the field order to ask for (default none: progressive).
    public var field: FieldOrder
    /// `--bytesperline`: the first plane's bytes per line (nil: the driver's choice).
    public var bytesPerLine: UInt32? = nil

    public init(input: UInt32? = nil, pixelFormat: FourCC? = nil, width: UInt32? = nil, height: UInt32? = nil,
                framesPerSecond: Double? = nil, controls: [ControlSetting] = [], field: FieldOrder = .none) {
        self.field = field
        self.input = input
        self.pixelFormat = pixelFormat
        self.width = width
        self.height = height
        self.framesPerSecond = framesPerSecond
        self.controls = controls
    }

    /// The pin configuration for these options.
    public func pinConfiguration(errorFramePolicy: ErrorFramePolicy = .deliver,
                                 corruptFramePolicy: CorruptFramePolicy = .skip) -> PinConfiguration {
        var configuration = PinConfiguration(input: input, pixelFormat: pixelFormat, width: width, height: height,
                                             framesPerSecond: framesPerSecond, controls: controls.map { (name: $0.name, value: $0.value) },
                                             errorFramePolicy: errorFramePolicy, corruptFramePolicy: corruptFramePolicy)
        configuration.field = field
        configuration.bytesPerLine = bytesPerLine
        return configuration
    }

    /// Checks that `device` has every control named, before anything is set.
    public func checkControls(on device: VideoDevice) throws(FrameDumpError) {
        guard !controls.isEmpty else { return }
        let available: [ControlInfo]
        do {
            available = try device.controls()
        } catch {
            throw FrameDumpError(error)
        }
        for control in controls {
            let wanted = ControlInfo.commandLineName(for: control.name)
            guard let info = available.first(where: { $0.commandLineName == wanted }) else {
                throw .usage("--set-ctrl: \(device.path) has no control named \(control.name) (`framedump info -d \(device.path)` lists the controls)")
            }
            // The type from VIDIOC_QUERY_EXT_CTRL: a string or compound control has no integer
            // value (S_EXT_CTRLS would fail with ERANGE naming only the control's number).
            guard info.type.isNumeric else {
                throw .usage("--set-ctrl: control \(info.commandLineName) of \(device.path) is a \(info.type) control; framedump sets only integer, boolean, menu, bitmask and button controls (v4l2-ctl --set-ctrl sets \(info.type) controls)")
            }
            if info.isReadOnly {
                throw .usage("--set-ctrl: control \(info.commandLineName) of \(device.path) is read-only")
            }
            if info.type != .button && info.type.isNumeric && (control.value < info.minimum || control.value > info.maximum) {
                throw .usage("--set-ctrl: \(info.commandLineName)=\(control.value) is out of range \(info.minimum)...\(info.maximum) on \(device.path)")
            }
        }
    }
}

/// `--on-source-change`: what a capture does when the source's format changes (an HDMI source's
/// timings, an analog standard).
public enum SourceChangeAction: String, Sendable, CaseIterable {
    /// Start a new segment in the new format: -o FILE's next file is FILE-segK (K from 1).
    case follow
    /// Stop cleanly after the frames of the first format.
    case stop
}

/// The options of a capture, parsed and checked.
public struct CaptureOptions: Sendable {
    public var devicePath: String
    /// How the device is opened (`KernelBackend`, `LibV4L2Backend` for `--libv4l2`, or a simulator).
    public var backend: any DeviceBackend
    public var count: Int
    public var memory: MemoryKind
    public var dmabufSource: DMABufSource?
    /// Buffers to ask the allocator for; nil lets selection choose.
    public var buffers: Int?
    public var format: FormatOptions
    /// `-o`: a path, `-` for standard output, nil to write no stream.
    public var outputPath: String?
    public var container: OutputContainer
    /// `--direct-io`: whether a raw stream to a file is written with O_DIRECT.
    public var directIO: DirectIOMode
    public var pngDirectory: String?
    /// `--every`: a PNG or JPEG file of every Nth frame.
    public var pngEvery: Int
    public var errorFramePolicy: ErrorFramePolicy
    /// `--corrupt-frames`: compressed frames that fail validation are skipped (default) or delivered.
    public var corruptFramePolicy: CorruptFramePolicy
    /// `--jpeg-dir`: each (`--every`-th) MJPEG frame as it came, `frame-NNNNNN.jpg`.
    public var jpegDirectory: String?
    /// Fail when no frame arrives for this long.
    public var frameTimeoutSeconds: Double
    /// After a disconnect, wait for the same device (same bus info and card) and go on.
    public var reconnect: Bool = false
    /// `--reconnect-timeout`: how long to wait for it; nil for the default.
    public var reconnectTimeoutSeconds: Double?
    /// `--on-source-change`: follow a source change into a new segment (default), or stop.
    public var onSourceChange: SourceChangeAction = .follow
    /// `--wait-for-signal`: how long to wait for a signal (at the start, or after it is lost);
    /// nil fails at once without one.
    public var waitForSignalSeconds: Double? = nil
    /// The wait after a disconnect: `reconnectTimeoutSeconds`, 30 s by default.
    public var reconnectWaitSeconds: Double { reconnectTimeoutSeconds ?? 30 }

    public init(devicePath: String, backend: any DeviceBackend = KernelBackend.shared, count: Int,
                memory: MemoryKind = .mmap, dmabufSource: DMABufSource? = nil, buffers: Int? = nil,
                format: FormatOptions = FormatOptions(), outputPath: String? = nil, container: OutputContainer = .raw,
                directIO: DirectIOMode = .auto, pngDirectory: String? = nil, pngEvery: Int = 1, errorFramePolicy: ErrorFramePolicy = .deliver,
                frameTimeoutSeconds: Double = 5,
                corruptFramePolicy: CorruptFramePolicy = .skip, jpegDirectory: String? = nil,
                reconnect: Bool = false, reconnectTimeoutSeconds: Double? = nil,
                onSourceChange: SourceChangeAction = .follow, waitForSignalSeconds: Double? = nil) {
        self.onSourceChange = onSourceChange
        self.waitForSignalSeconds = waitForSignalSeconds
        self.devicePath = devicePath
        self.backend = backend
        self.count = count
        self.memory = memory
        self.dmabufSource = dmabufSource
        self.buffers = buffers
        self.format = format
        self.outputPath = outputPath
        self.container = container
        self.directIO = directIO
        self.pngDirectory = pngDirectory
        self.pngEvery = pngEvery
        self.errorFramePolicy = errorFramePolicy
        self.corruptFramePolicy = corruptFramePolicy
        self.jpegDirectory = jpegDirectory
        self.frameTimeoutSeconds = frameTimeoutSeconds
        self.reconnect = reconnect
        self.reconnectTimeoutSeconds = reconnectTimeoutSeconds
    }

    /// These options for the device at `position` among several (0 for one): `{n}` in -o,
    /// --png-dir and --jpeg-dir becomes the position.
    public func forDevice(position: Int) -> CaptureOptions {
        var options = self
        func expand(_ path: String?) -> String? { path?.replacing("{n}", with: String(position)) }
        options.outputPath = expand(outputPath)
        options.pngDirectory = expand(pngDirectory)
        options.jpegDirectory = expand(jpegDirectory)
        return options
    }

    /// Checks the values that need no device: options that only mean something with another
    /// one, and the output paths. The ranges of single values (-n, --buffers, --every,
    /// --timeout, --size, --fps, ...) are checked once, where the command line is parsed
    /// (``OptionValues``).
    public func validate() throws(FrameDumpError) {
        // A contract for code that builds options by hand, not a second check of the command
        // line: every 0 would divide by zero in the sinks.
        precondition(count >= 1 && pngEvery >= 1, "CaptureOptions: count and pngEvery must be at least 1 (OptionValues checks -n and --every)")
        guard !devicePath.isEmpty else { throw .usage("-d: the device path is empty") }
        try AllocatorPlan.checkBackend(backend, memory: memory)
        if reconnectTimeoutSeconds != nil && !reconnect {
            throw .usage("--reconnect-timeout needs --reconnect")
        }
        if container != .raw && outputPath == nil {
            throw .usage("--container \(container.rawValue) needs -o FILE (or -o - for standard output)")
        }
        if directIO != .auto && outputPath == nil {
            throw .usage("--direct-io \(directIO) needs -o FILE")
        }
        if pngEvery != 1 && pngDirectory == nil && jpegDirectory == nil {
            throw .usage("--every needs --png-dir DIR or --jpeg-dir DIR")
        }
        if memory == .dmabuf && dmabufSource == nil {
            throw .usage("--memory dmabuf needs --dmabuf-from DEVICE (another V4L2 device to export buffers from, e.g. /dev/video1) or --dmabuf-from vgem")
        }
        if memory != .dmabuf, let source = dmabufSource {
            throw .usage("--dmabuf-from \(source) is only used with --memory dmabuf")
        }
        if case .device(let path) = dmabufSource, path == devicePath {
            throw .usage("--dmabuf-from \(path): the exporter must be another device than -d \(devicePath)")
        }
        if let outputPath { try FrameOutput.checkWritable(path: outputPath) }
        if directIO == .on {
            guard let outputPath, outputPath != "-" else {
                throw .usage("--direct-io on needs -o FILE, a regular file (standard output is written through the page cache)")
            }
            guard container == .raw else {
                throw .usage("--direct-io on needs --container raw (y4m frames start with a FRAME header, never aligned for O_DIRECT)")
            }
            var status = stat()
            if stat(outputPath, &status) == 0 && (status.st_mode & S_IFMT) != S_IFREG {
                throw .usage("--direct-io on: -o \(outputPath) is not a regular file")
            }
        }
        if let pngDirectory { try PNGSink.checkDirectory(pngDirectory) }
        if let jpegDirectory { try JPEGSink.checkDirectory(jpegDirectory) }
    }
}
