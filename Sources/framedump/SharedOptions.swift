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
    @Option(name: .customLong("input"), help: "Select video input N (VIDIOC_S_INPUT) first.")
    var input: Int?

    @Option(name: .customLong("pixel-format"), help: ArgumentHelp("The pixel format, a FOURCC such as YUYV or NV12.", valueName: "fourcc"))
    var pixelFormat: String?

    @Option(name: .customLong("size"), help: ArgumentHelp("The frame size, e.g. 640x480.", valueName: "WxH"))
    var size: String?

    @Option(name: .customLong("fps"), help: ArgumentHelp("Frames per second to ask for (30, 29.97 or 30000/1001).", valueName: "F"))
    var fps: String?

    @Option(name: .customLong("set-ctrl"),
            help: ArgumentHelp("Set a control before streaming, by the name v4l2-ctl prints (osd_text_mode=2); repeatable, or comma-separated (a=1,b=2).",
                               valueName: "name=value"))
    var setControls: [String] = []

    func parsed() throws(FrameDumpError) -> FormatOptions {
        try FormatOptions.parse(input: input, pixelFormat: pixelFormat, size: size, fps: fps, setControls: setControls)
    }
}

/// `--memory`, `--dmabuf-from`, `--buffers`.
struct MemoryArguments: ParsableArguments {
    @Option(name: .customLong("memory"), help: ArgumentHelp("The memory kind of the buffers: mmap (default), userptr or dmabuf.", valueName: "mmap|userptr|dmabuf"))
    var memory: String?

    @Option(name: .customLong("dmabuf-from"),
            help: ArgumentHelp("With --memory dmabuf: export buffers from another V4L2 device (VIDIOC_EXPBUF), or from vgem DRM dumb buffers.", valueName: "DEV|vgem"))
    var dmabufFrom: String?

    @Option(name: .customLong("buffers"), help: ArgumentHelp("Buffers to ask the allocator for (\(AllocatorPlan.bufferRange.lowerBound)...\(AllocatorPlan.bufferRange.upperBound); a count below the device's minimum is raised to it).", valueName: "N"))
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
