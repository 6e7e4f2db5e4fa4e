import ArgumentParser
import FrameBridge
import FrameDump

struct CaptureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Capture frames to a raw or YUV4MPEG2 stream and/or PNG pictures.",
        discussion: """
        -o FILE writes each frame's payload bytes (--container raw, the default; byte-identical to \
        v4l2-ctl --stream-to) or a YUV4MPEG2 stream (--container y4m); -o - writes to standard output. \
        The file is created only once the device streams. A raw stream to a regular file goes \
        with O_DIRECT (no copy into the page cache) when the file system accepts it and a frame's \
        buffers are aligned for it; other frames go through the page cache; the summary counts both \
        (--direct-io). A summary follows on standard error \
        (--json: JSON on standard output, or on standard error with -o -); --quiet leaves out the \
        progress line and the text summary. SIGINT/SIGTERM stop the capture cleanly after the current \
        frame: the output keeps every whole frame, the summary says interrupted, the exit code is 0. \
        With --memory dmabuf, --dmabuf-from names the exporter; a requested allocator that selection \
        rejects is an error (no fall-back to mmap). \
        Compressed formats (MJPEG): every frame is checked before it is written (bytesused 0, no SOI \
        marker, no EOI marker at the end = truncated, bytesused > length); --corrupt-frames skip (the \
        default) gives such frames back to the driver unwritten, deliver writes them; the summary counts \
        each case. --jpeg-dir writes the frames as they came, one .jpg each; --png-dir and --container y4m \
        decode them (y4m takes its chroma layout from the JPEG: 4:2:0 -> C420jpeg, 4:2:2 -> C422).
        """
    )

    @OptionGroup var device: DeviceOptions

    @Option(name: [.customShort("n"), .customLong("count")], parsing: .unconditional,
            help: ArgumentHelp("Frames to capture (at least 1).", valueName: "N"), transform: OptionValues.frameCount)
    var count: Int

    @OptionGroup var memory: MemoryArguments
    @OptionGroup var format: FormatArguments

    @Option(name: [.customShort("o"), .customLong("output")], help: ArgumentHelp("Write the stream to FILE, or - for standard output.", valueName: "FILE|-"))
    var output: String?

    @Option(name: .customLong("container"), help: "The stream format of -o (default raw).")
    var container: OutputContainer?

    @Option(name: .customLong("direct-io"),
            help: "Raw frames to a file with O_DIRECT, straight from the capture buffer: auto (default: when the file system accepts it and a frame is aligned), on (fail if the file system refuses) or off.")
    var directIO: DirectIOMode?

    @Option(name: .customLong("png-dir"), help: ArgumentHelp("Write PNG pictures of frames (frame-000000.png, ...) into DIR.", valueName: "DIR"))
    var pngDirectory: String?

    @Option(name: .customLong("jpeg-dir"), help: ArgumentHelp("MJPEG: write each frame as it came (frame-000000.jpg, ...) into DIR, each file whole or not at all.", valueName: "DIR"))
    var jpegDirectory: String?

    @Option(name: .customLong("every"), parsing: .unconditional,
            help: ArgumentHelp("With --png-dir or --jpeg-dir: a file of every Nth frame (default 1).", valueName: "N"),
            transform: OptionValues.every)
    var every: Int?

    @Option(name: .customLong("error-frames"), help: "Frames with the ERROR flag.")
    var errorFrames: ErrorFramePolicy = .deliver

    @Option(name: .customLong("corrupt-frames"), help: "Compressed frames that fail validation (empty, no SOI, truncated, bytesused > length).")
    var corruptFrames: CorruptFramePolicy = .skip

    @Option(name: .customLong("timeout"), parsing: .unconditional, help: ArgumentHelp("Fail when no frame arrives for this many seconds (default 5).", valueName: "SECONDS"),
            transform: OptionValues.seconds)
    var timeout: Double?

    @Flag(name: .customLong("reconnect"), help: "After an unplug, wait for the same device (matched by bus info and card, not node number) and go on into the same output; the summary counts the gap.")
    var reconnect = false

    @Option(name: .customLong("reconnect-timeout"), parsing: .unconditional, help: ArgumentHelp("With --reconnect: how long to wait for the device (default 30).", valueName: "SECONDS"),
            transform: OptionValues.seconds)
    var reconnectTimeout: Double?

    @Flag(name: .customLong("json"), help: "Print the summary as JSON.")
    var json = false

    @Flag(name: [.customShort("q"), .customLong("quiet")], help: "No progress line and no text summary.")
    var quiet = false

    func run() throws {
        // --container, --direct-io and --every without what they apply to are refused by
        // validate() (run() calls it) as long as they differ from their defaults.
        let options = CaptureOptions(devicePath: device.device, backend: device.backend, count: count, memory: memory.memory,
                                     dmabufSource: memory.dmabufFrom, buffers: memory.buffers, format: format.options,
                                     outputPath: output, container: container ?? .raw, directIO: directIO ?? .auto,
                                     pngDirectory: pngDirectory, pngEvery: every ?? 1, errorFramePolicy: errorFrames,
                                     frameTimeoutSeconds: timeout ?? 5, corruptFramePolicy: corruptFrames,
                                     jpegDirectory: jpegDirectory, reconnect: reconnect, reconnectTimeoutSeconds: reconnectTimeout)
        StopSignals.install()
        let session = CaptureSession(options: options)
        session.progress = ProgressLine.forStandardError(quiet: quiet)
        let summary = try session.run()
        if json {
            let text = summary.json() + "\n"
            if output == "-" { printError(text) } else { printOutput(text) }
        } else if !quiet {
            printError(summary.render())
        }
    }
}
