import ArgumentParser
import FrameDump
import V4L2

/// `-d DEV` and `--libv4l2`.
struct DeviceOptions: ParsableArguments {
    @Option(name: [.customShort("d"), .customLong("device")], help: "The video device, e.g. /dev/video0.")
    var device: String

    @Flag(name: .customLong("libv4l2"), help: "Open the device through libv4l2 (v4l2_open/v4l2_ioctl) instead of raw system calls.")
    var libv4l2 = false

    var backend: any DeviceBackend { libv4l2 ? LibV4L2Backend.shared : KernelBackend.shared }
}

/// The format options shared by `framing` and `capture`.
struct FormatArguments: ParsableArguments {
    @Option(name: .customLong("input"), parsing: .unconditional, help: ArgumentHelp("Select video input N (VIDIOC_S_INPUT) first.", valueName: "N"),
            transform: OptionValues.input)
    var input: UInt32?

    @Option(name: .customLong("pixel-format"), help: ArgumentHelp("The pixel format, a FOURCC such as YUYV or NV12.", valueName: "fourcc"),
            transform: OptionValues.fourCC)
    var pixelFormat: FourCC?

    @Option(name: .customLong("size"),
            help: ArgumentHelp("The frame size, e.g. 640x480 (width and height \(OptionValues.sizeRange.lowerBound)...\(OptionValues.sizeRange.upperBound)).", valueName: "WxH"),
            transform: OptionValues.size)
    var size: RequestedSize?

    @Option(name: .customLong("fps"), parsing: .unconditional, help: ArgumentHelp("Frames per second to ask for, 0.001 to 10000 (30, 29.97 or 30000/1001).", valueName: "F"),
            transform: OptionValues.framesPerSecond)
    var fps: Double?

    @Option(name: .customLong("set-ctrl"),
            help: ArgumentHelp("Set a control before streaming, by the name v4l2-ctl prints (osd_text_mode=2); repeatable, or comma-separated (a=1,b=2).",
                               valueName: "name=value"),
            transform: OptionValues.controls)
    var setControls: [[ControlSetting]] = []

    @Option(name: .customLong("field"),
            help: ArgumentHelp("The field order to ask for (default none: progressive); the driver may choose another, and the summary says which is in force. Interlaced sources: interlaced (woven frames).",
                               valueName: "field"))
    var field: FieldOrder?

    /// These options, with those `own` sets in their place (its --set-ctrl after these).
    func merged(with own: FormatArguments) -> FormatOptions {
        let size = own.size ?? self.size
        return FormatOptions(input: own.input ?? input, pixelFormat: own.pixelFormat ?? pixelFormat, width: size?.width,
                             height: size?.height, framesPerSecond: own.fps ?? fps,
                             controls: (setControls + own.setControls).flatMap { $0 }, field: own.field ?? field ?? .none)
    }

    var options: FormatOptions {
        FormatOptions(input: input, pixelFormat: pixelFormat, width: size?.width, height: size?.height,
                      framesPerSecond: fps, controls: setControls.flatMap { $0 }, field: field ?? .none)
    }
}

/// `--memory`, `--dmabuf-from`, `--buffers`.
struct MemoryArguments: ParsableArguments {
    // Optional rather than `= .mmap`: swift-argument-parser would show the default as the
    // raw value (V4L2_MEMORY_MMAP, 1).
    @Option(name: .customLong("memory"), help: "The memory kind of the buffers (default mmap).")
    var memoryKind: MemoryKind?

    var memory: MemoryKind { memoryKind ?? .mmap }

    @Option(name: .customLong("dmabuf-from"),
            help: ArgumentHelp("With --memory dmabuf: export buffers from another V4L2 device (VIDIOC_EXPBUF), or from vgem DRM dumb buffers (vgem, vgem:/dev/dri/cardN).", valueName: "DEV|vgem"),
            transform: OptionValues.dmabufSource)
    var dmabufFrom: DMABufSource?

    @Option(name: .customLong("buffers"), parsing: .unconditional,
            help: ArgumentHelp("Buffers to ask the allocator for (\(OptionValues.bufferRange.lowerBound)...\(OptionValues.bufferRange.upperBound); a count below the device's minimum is raised to it).", valueName: "N"),
            transform: OptionValues.bufferCount)
    var buffers: Int?
}

/// Prints to standard error.
func printError(_ text: String) {
    writeAll(2, text)
}

/// Prints to standard output, unbuffered (so it is not mixed up with a stream on standard output).
func printOutput(_ text: String) {
    writeAll(1, text)
}

/// Writes all of `text` to `descriptor` (write(2), repeated for short writes; stops on an error).
private func writeAll(_ descriptor: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let written = bytes.withUnsafeBytes { fdWrite(descriptor, $0.baseAddress! + done, $0.count - done) }
        if written <= 0 { return }
        done += written
    }
}
