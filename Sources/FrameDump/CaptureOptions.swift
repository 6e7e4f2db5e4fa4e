import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// The arguments of `framedump capture` as typed on the command line, before parsing.
public struct CaptureArguments: Sendable {
    public var device: String
    public var count: Int
    public var memory: String?
    public var dmabufFrom: String?
    public var buffers: Int?
    public var input: Int?
    public var pixelFormat: String?
    public var size: String?
    public var fps: String?
    public var setControls: [String]
    public var output: String?
    public var container: String?
    public var pngDirectory: String?
    public var every: Int?
    public var errorFrames: String?
    public var corruptFrames: String?
    public var jpegDirectory: String?
    public var timeoutSeconds: Double?
    public var libv4l2: Bool
    public var directIO: String?
    /// `--reconnect`: after an unplug, wait for the same device (bus info and card) to return.
    public var reconnect: Bool = false
    public var reconnectTimeoutSeconds: Double?

    public init(device: String, count: Int, memory: String? = nil, dmabufFrom: String? = nil, buffers: Int? = nil,
                input: Int? = nil, pixelFormat: String? = nil, size: String? = nil, fps: String? = nil,
                setControls: [String] = [], output: String? = nil, container: String? = nil, pngDirectory: String? = nil,
                every: Int? = nil, errorFrames: String? = nil, timeoutSeconds: Double? = nil, libv4l2: Bool = false,
                directIO: String? = nil, corruptFrames: String? = nil, jpegDirectory: String? = nil) {
        self.device = device
        self.count = count
        self.memory = memory
        self.dmabufFrom = dmabufFrom
        self.buffers = buffers
        self.input = input
        self.pixelFormat = pixelFormat
        self.size = size
        self.fps = fps
        self.setControls = setControls
        self.output = output
        self.container = container
        self.directIO = directIO
        self.pngDirectory = pngDirectory
        self.every = every
        self.errorFrames = errorFrames
        self.timeoutSeconds = timeoutSeconds
        self.libv4l2 = libv4l2
        self.directIO = directIO
        self.corruptFrames = corruptFrames
        self.jpegDirectory = jpegDirectory
    }
}

/// The format options shared by `framing` and `capture`: input, pixel format, size, rate, controls.
public struct FormatOptions: Sendable {
    public var input: UInt32?
    public var pixelFormat: FourCC?
    public var width: UInt32?
    public var height: UInt32?
    public var framesPerSecond: Double?
    public var controls: [ControlSetting]

    public init(input: UInt32? = nil, pixelFormat: FourCC? = nil, width: UInt32? = nil, height: UInt32? = nil,
                framesPerSecond: Double? = nil, controls: [ControlSetting] = []) {
        self.input = input
        self.pixelFormat = pixelFormat
        self.width = width
        self.height = height
        self.framesPerSecond = framesPerSecond
        self.controls = controls
    }

    /// Parses the raw option values; errors name the option.
    public static func parse(input: Int?, pixelFormat: String?, size: String?, fps: String?, setControls: [String]) throws(FrameDumpError) -> FormatOptions {
        var options = FormatOptions()
        if let input {
            guard input >= 0, input <= Int(Int32.max) else { throw .usage("--input: \(input) is not a valid input number") }
            options.input = UInt32(input)
        }
        if let pixelFormat { options.pixelFormat = try ArgumentParsing.fourCC(pixelFormat) }
        if let size {
            let parsed = try ArgumentParsing.size(size)
            options.width = parsed.width
            options.height = parsed.height
        }
        if let fps { options.framesPerSecond = try ArgumentParsing.framesPerSecond(fps) }
        options.controls = try ArgumentParsing.controls(setControls)
        return options
    }

    /// The pin configuration for these options.
    public func pinConfiguration(errorFramePolicy: ErrorFramePolicy = .deliver,
                                 corruptFramePolicy: CorruptFramePolicy = .skip) -> PinConfiguration {
        PinConfiguration(input: input, pixelFormat: pixelFormat, width: width, height: height,
                         framesPerSecond: framesPerSecond, controls: controls.map { (name: $0.name, value: $0.value) },
                         errorFramePolicy: errorFramePolicy, corruptFramePolicy: corruptFramePolicy)
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
    /// How long to wait for it.
    public var reconnectTimeoutSeconds: Double = 30

    public init(devicePath: String, backend: any DeviceBackend = KernelBackend.shared, count: Int,
                memory: MemoryKind = .mmap, dmabufSource: DMABufSource? = nil, buffers: Int? = nil,
                format: FormatOptions = FormatOptions(), outputPath: String? = nil, container: OutputContainer = .raw,
                directIO: DirectIOMode = .auto, pngDirectory: String? = nil, pngEvery: Int = 1, errorFramePolicy: ErrorFramePolicy = .deliver,
                frameTimeoutSeconds: Double = 5,
                corruptFramePolicy: CorruptFramePolicy = .skip, jpegDirectory: String? = nil) {
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
    }

    /// Parses the command-line values. `backend` replaces the kernel/libv4l2 choice (for tests).
    public init(arguments: CaptureArguments, backend: (any DeviceBackend)? = nil) throws(FrameDumpError) {
        let memory = try arguments.memory.map { (text: String) throws(FrameDumpError) in try ArgumentParsing.memoryKind(text) } ?? .mmap
        let source = try arguments.dmabufFrom.map { (text: String) throws(FrameDumpError) in try ArgumentParsing.dmabufSource(text) }
        let format = try FormatOptions.parse(input: arguments.input, pixelFormat: arguments.pixelFormat, size: arguments.size,
                                             fps: arguments.fps, setControls: arguments.setControls)
        let container = try arguments.container.map { (text: String) throws(FrameDumpError) in try ArgumentParsing.container(text) } ?? .raw
        let directIO = try arguments.directIO.map { (text: String) throws(FrameDumpError) in try ArgumentParsing.directIOMode(text) } ?? .auto
        let policy = try arguments.errorFrames.map { (text: String) throws(FrameDumpError) in try ArgumentParsing.errorFramePolicy(text) } ?? .deliver
        let corruptPolicy = try arguments.corruptFrames.map { (text: String) throws(FrameDumpError) in try ArgumentParsing.corruptFramePolicy(text) } ?? .skip
        self.init(devicePath: arguments.device,
                  backend: backend ?? (arguments.libv4l2 ? LibV4L2Backend.shared : KernelBackend.shared),
                  count: arguments.count, memory: memory, dmabufSource: source, buffers: arguments.buffers,
                  format: format, outputPath: arguments.output, container: container, directIO: directIO,
                  pngDirectory: arguments.pngDirectory, pngEvery: arguments.every ?? 1, errorFramePolicy: policy,
                  frameTimeoutSeconds: arguments.timeoutSeconds ?? 5, corruptFramePolicy: corruptPolicy,
                  jpegDirectory: arguments.jpegDirectory)
        reconnect = arguments.reconnect
        if let timeout = arguments.reconnectTimeoutSeconds {
            guard arguments.reconnect else { throw .usage("--reconnect-timeout needs --reconnect") }
            guard timeout > 0, timeout.isFinite else { throw .usage("--reconnect-timeout: must be a positive number of seconds, got \(timeout)") }
            reconnectTimeoutSeconds = timeout
        }
        if arguments.container != nil && arguments.output == nil {
            throw .usage("--container \(container.rawValue) needs -o FILE (or -o - for standard output)")
        }
        if arguments.directIO != nil && arguments.output == nil {
            throw .usage("--direct-io \(directIO) needs -o FILE")
        }
        if arguments.every != nil && arguments.pngDirectory == nil && arguments.jpegDirectory == nil {
            throw .usage("--every needs --png-dir DIR or --jpeg-dir DIR")
        }
        try validate()
    }

    /// Checks the values that need no device.
    public func validate() throws(FrameDumpError) {
        guard !devicePath.isEmpty else { throw .usage("-d: the device path is empty") }
        guard count >= 1 else { throw .usage("-n: the frame count must be at least 1, got \(count)") }
        try AllocatorPlan.checkBuffers(buffers)
        try AllocatorPlan.checkBackend(backend, memory: memory)
        guard pngEvery >= 1 else { throw .usage("--every: must be at least 1, got \(pngEvery)") }
        guard frameTimeoutSeconds > 0, frameTimeoutSeconds.isFinite else {
            throw .usage("--timeout: must be a positive number of seconds, got \(frameTimeoutSeconds)")
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
