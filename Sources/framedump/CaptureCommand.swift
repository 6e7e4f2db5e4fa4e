import ArgumentParser
import FrameBridge
import FrameDump
import V4L2

struct CaptureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Capture frames to a raw or YUV4MPEG2 stream and/or PNG pictures.",
        discussion: """
        Output: -o FILE writes each frame's payload bytes, one writev per frame (--container raw, \
        the default; byte-identical to v4l2-ctl --stream-to), or a YUV4MPEG2 stream (--container y4m: \
        YUYV and UYVY as 4:2:2, NV12/NM12 and YU12/YM12 as 4:2:0, GREY, MJPEG decoded); -o - writes \
        to standard output. The file is created only once the device streams; when the disk is full \
        it is cut back to the last whole frame. A raw stream to a regular file goes with O_DIRECT \
        (no copy into the page cache) when the file system accepts it and a frame's buffers are \
        aligned for it; other frames go through the page cache; the summary counts both (--direct-io).

        Pictures: --png-dir converts frames to RGB with libswscale, told the frame's colorimetry \
        (the Y'CbCr matrix and range the driver reports); a format it cannot convert is refused \
        before streaming. Interlaced sources: --field interlaced gives woven frames, marked top or \
        bottom field first in y4m; fields in separate buffers (alternate, seq-tb, seq-bt) are \
        refused for y4m.

        Summary and stopping: a summary follows on standard error (--json: JSON on standard output, \
        or on standard error with -o -); --quiet leaves out the progress line and the text summary. \
        A frame rate the driver changes is a notice, and the summary has the rate asked for and the one granted. SIGINT/SIGTERM stop \
        the capture cleanly after the current frame: the output keeps every whole frame, the \
        summary says interrupted, the exit code is 0. A device unplugged mid-capture ends it with \
        one line naming the device, exit code 1 (the output keeps every whole frame, --json still \
        prints the summary); --reconnect waits for it instead (one device only).

        Memory: with --memory dmabuf, --dmabuf-from names the exporter; a requested allocator that \
        selection rejects is an error (no fall-back to mmap). `framedump framing` shows why.

        Live sources (HDMI, analog TV): the source's DV timings or standard are applied at the \
        start. When they change mid-stream, --on-source-change follow (the default) goes on in a \
        new segment, each in its own file (-o cap.raw, then cap-seg1.raw, ...; a y4m file gets its \
        own header) and the summary lists the segments; standard output cannot change its format, \
        so there a change ends the capture with exit code 1. An input without a signal is an \
        error, at the start or when the signal goes, unless --wait-for-signal.

        Compressed formats (MJPEG): every frame is checked before it is written (bytesused 0, no SOI \
        marker, no EOI marker at the end = truncated, bytesused > length); --corrupt-frames skip (the \
        default) gives such frames back to the driver unwritten, deliver writes them; the summary counts \
        each case. --jpeg-dir writes the frames as they came, one .jpg each; --png-dir and --container y4m \
        decode them (y4m takes its chroma layout from the JPEG: 4:2:0 -> C420jpeg, 4:2:2 -> C422).

        Encoders and converters: --encode DEV (or fwht, h264: the first encoder of that codec) \
        hands each frame to a memory-to-memory device and writes what it gives: H.264 as Annex B, \
        FWHT in v4l2-ctl's --stream-to-hdr layout, a converter's (--convert DEV) frames raw. Frames \
        cross without a copy when both devices agree on the layout, else they are copied \
        (--connection); the summary says which and why. At the end the device is drained: one \
        result per frame. A source change drains it and goes on in a new segment file.

        Several cameras: repeat -d (-d /dev/video0 -d /dev/video2); one process captures -n frames from \
        each, with one poll over all of them. {n} in -o, --png-dir and --jpeg-dir is the device's \
        position among the -d options, from 0 (-o cam{n}.raw); the names must differ, and -o - is \
        refused. The format and memory options apply to every device; --device-options N=OPTIONS \
        gives device N its own (--device-options "1=--size 1280x720 --pixel-format MJPG"). Every \
        device is set up before any starts. One device's failure or unplug ends its stream and \
        the others go on (exit code 1 at the end, each output keeps its whole frames), unless \
        --all-or-nothing. The summary has a devices array and each device's timestamp skew to the first.
        """
    )

    @OptionGroup var device: CaptureDeviceOptions

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

    @Option(name: .customLong("device-options"), parsing: .unconditionalSingleValue,
            help: ArgumentHelp("Format and memory options for the device at position N among the -d options (from 0), e.g. \"1=--size 1280x720 --pixel-format MJPG\"; repeatable.",
                               valueName: "N=OPTIONS"))
    var deviceOptions: [String] = []

    @Flag(name: .customLong("all-or-nothing"), help: "With several -d: the first device that fails stops every device (default: the others go on).")
    var allOrNothing = false

    @Option(name: .customLong("on-source-change"),
            help: "When the source's format changes (HDMI timings, analog standard): follow (default) goes on in a new segment, each in its own file (-o FILE, then FILE-seg1, FILE-seg2, ...), stop ends the capture cleanly.")
    var onSourceChange: SourceChangeAction?

    @Option(name: .customLong("wait-for-signal"), parsing: .unconditional,
            help: ArgumentHelp("Wait this long for a signal when the input has none, at the start or after it is lost (default: fail at once).", valueName: "SECONDS"),
            transform: OptionValues.seconds)
    var waitForSignal: Double?

    @Option(name: .customLong("encode"),
            help: ArgumentHelp("Feed the frames to a memory-to-memory encoder and write what it gives: a node (/dev/video11), or a codec (fwht, h264) to find the first encoder of it.", valueName: "DEV|fwht|h264"))
    var encode: String?

    @Option(name: .customLong("convert"),
            help: ArgumentHelp("Feed the frames to a memory-to-memory converter (a scaler, a format converter) and write its frames; --size and --pixel-format then name its output, --source-size the camera's size.", valueName: "DEV"))
    var convert: String?

    @Option(name: .customLong("connection"),
            help: "With --encode or --convert: how frames reach the device: auto (default: a dmabuf connection when both sides agree on the layout, else a copy), dmabuf (no copy, or an error), copy, or one dmabuf direction: capture-dmabuf (the camera's buffers exported to the device), device-dmabuf (the device's buffers imported by the camera).")
    var connection: ConnectionPreference?

    @Option(name: .customLong("source-format"), help: ArgumentHelp("With --convert: the camera's pixel format (default: its current one if the converter takes it, else the first both have).", valueName: "fourcc"),
            transform: OptionValues.fourCC)
    var sourceFormat: FourCC?

    @Option(name: .customLong("source-size"), help: ArgumentHelp("With --convert: the camera's frame size (default: its current one).", valueName: "WxH"),
            transform: OptionValues.size)
    var sourceSize: RequestedSize?

    @Option(name: .customLong("bytesperline"), parsing: .unconditional,
            help: ArgumentHelp("Bytes per line of the captured frames (padding after each line, where the driver supports it).", valueName: "N"),
            transform: OptionValues.bytesPerLine)
    var bytesPerLine: UInt32?

    @Flag(name: .customLong("json"), help: "Print the summary as JSON.")
    var json = false

    @Flag(name: [.customShort("q"), .customLong("quiet")], help: "No progress line and no text summary.")
    var quiet = false

    func run() throws {
        // --container, --direct-io and --every without what they apply to are refused by
        // validate() (run() calls it) as long as they differ from their defaults.
        let overrides = try DeviceOverrides.parse(deviceOptions, devices: device.devices.count)
        let options = device.devices.enumerated().map { n, path in
            let own = overrides[n]
            return CaptureOptions(devicePath: path, backend: device.backend, count: count,
                                  memory: own?.memory.memoryKind ?? memory.memory,
                                  dmabufSource: own?.memory.dmabufFrom ?? memory.dmabufFrom,
                                  buffers: own?.memory.buffers ?? memory.buffers,
                                  format: own.map { format.merged(with: $0.format) } ?? format.options,
                                  outputPath: output, container: container ?? .raw, directIO: directIO ?? .auto,
                                  pngDirectory: pngDirectory, pngEvery: every ?? 1, errorFramePolicy: errorFrames,
                                  frameTimeoutSeconds: timeout ?? 5, corruptFramePolicy: corruptFrames,
                                  jpegDirectory: jpegDirectory, reconnect: reconnect, reconnectTimeoutSeconds: reconnectTimeout,
                                  onSourceChange: onSourceChange ?? .follow, waitForSignalSeconds: waitForSignal)
                .forDevice(position: n)
        }.map { options in
            var options = options
            options.format.bytesPerLine = bytesPerLine
            return options
        }
        StopSignals.install()
        if encode != nil || convert != nil {
            try runConnection(options[0])
            return
        }
        if connection != nil || sourceSize != nil || sourceFormat != nil {
            throw ValidationError("--connection, --source-format and --source-size go with --encode or --convert")
        }
        if options.count == 1 {
            let session = CaptureSession(options: options[0])
            session.progress = ProgressLine.forStandardError(quiet: quiet)
            if !quiet { session.notice = { printError("framedump: \($0)\n") } }
            let summary: CaptureSummary
            do {
                summary = try session.run()
            } catch {
                // A capture that failed part-way still tells a --json reader what it wrote and
                // dropped, as each device's entry does with several devices.
                if json, var partial = error.summary {
                    partial.error = partial.error ?? error.message
                    report(json: partial.json(), text: "")
                }
                throw error
            }
            report(json: summary.json(), text: summary.render())
            return
        }
        let session = MultiCaptureSession(options: options, allOrNothing: allOrNothing)
        session.progress = ProgressLine.forStandardError(quiet: quiet)
        if !quiet { session.notice = { printError("framedump: \($0)\n") } }
        let summary: MultiCaptureSummary
        do {
            summary = try session.run()
        } catch {
            if let partial = error.devicesSummary { report(json: partial.json(), text: partial.render()) }
            throw error
        }
        report(json: summary.json(), text: summary.render())
        // Each device that ended early, one line each; the others' outputs are complete.
        let failed = summary.devices.compactMap(\.error)
        if !failed.isEmpty {
            for message in failed { printError("framedump: \(message)\n") }
            exitProcess(1)
        }
    }

    /// `--encode` / `--convert`: one camera into a memory-to-memory device.
    private func runConnection(_ capture: CaptureOptions) throws {
        if encode != nil && convert != nil { throw ValidationError("--encode and --convert: give one of them") }
        if device.devices.count > 1 { throw ValidationError("--encode and --convert take one -d") }
        let refused: [(Bool, String)] = [(pngDirectory != nil, "--png-dir"), (jpegDirectory != nil, "--jpeg-dir"), (container != nil, "--container"),
                                         (reconnect, "--reconnect"), (!deviceOptions.isEmpty, "--device-options"), (directIO != nil, "--direct-io"),
                                         (output == "-", "-o -")]
        if let (_, option) = refused.first(where: { $0.0 }) {
            throw ValidationError("\(option) does not go with --encode or --convert (the output is the device's stream, written to -o FILE)")
        }
        var capture = capture
        var options: ConnectionOptions
        if encode != nil, sourceSize != nil || sourceFormat != nil {
            throw ValidationError("--source-format and --source-size go with --convert; with --encode, --pixel-format and --size are the camera's")
        }
        if let encode {
            options = ConnectionOptions(capture: capture, role: .encoder, target: ConnectionTarget.parse(encode),
                                        preference: connection ?? .auto)
        } else {
            // --size and --pixel-format name the converter's output; the camera keeps its format
            // (or the first one the converter takes) at --source-size.
            capture.format.pixelFormat = sourceFormat
            capture.format.width = sourceSize?.width
            capture.format.height = sourceSize?.height
            options = ConnectionOptions(capture: capture, role: .converter, target: .device(convert ?? ""),
                                        preference: connection ?? .auto, resultFormat: format.pixelFormat,
                                        resultWidth: format.size?.width, resultHeight: format.size?.height)
        }
        options.capture = capture
        let session = ConnectionSession(options: options)
        let summary: ConnectionSummary
        do {
            summary = try session.run()
        } catch {
            if json, let partial = error.connectionSummary { report(json: partial.json(), text: "") }
            throw error
        }
        report(json: summary.json(), text: summary.render())
    }

    private func report(json text: String, text rendered: String) {
        if json {
            if output == "-" { printError(text + "\n") } else { printOutput(text + "\n") }
        } else if !quiet {
            printError(rendered)
        }
    }
}

/// `-d DEV` (repeatable: several cameras in one capture) and `--libv4l2`.
struct CaptureDeviceOptions: ParsableArguments {
    @Option(name: [.customShort("d"), .customLong("device")],
            help: ArgumentHelp("The video device, e.g. /dev/video0; repeat it to capture from several devices at once.", valueName: "device"))
    var devices: [String]

    @Flag(name: .customLong("libv4l2"), help: "Open the devices through libv4l2 (v4l2_open/v4l2_ioctl) instead of raw system calls.")
    var libv4l2 = false

    var backend: any DeviceBackend { libv4l2 ? LibV4L2Backend.shared : KernelBackend.shared }
}

/// `--device-options N=OPTIONS`: the format and memory options of one device of several.
struct DeviceOverrides: ParsableArguments {
    @OptionGroup var format: FormatArguments
    @OptionGroup var memory: MemoryArguments

    /// Each `N=OPTIONS`, by device position.
    static func parse(_ values: [String], devices: Int) throws -> [Int: DeviceOverrides] {
        var result: [Int: DeviceOverrides] = [:]
        for value in values {
            guard let equals = value.firstIndex(of: "="), let n = Int(value[..<equals]) else {
                throw ValidationError("--device-options \(value): expected N=OPTIONS, N the device's position among the -d options from 0, e.g. \"1=--size 1280x720\"")
            }
            guard (0..<devices).contains(n) else {
                throw ValidationError("--device-options \(value): there is no device \(n); \(devices) -d option(s) give positions 0...\(devices - 1)")
            }
            guard result[n] == nil else {
                throw ValidationError("--device-options: device \(n) is given twice; put all its options in one --device-options")
            }
            let words = value[value.index(after: equals)...].split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            do {
                result[n] = try DeviceOverrides.parse(words)
            } catch {
                var message = DeviceOverrides.message(for: error)
                if let newline = message.firstIndex(of: "\n") { message = String(message[..<newline]) }
                if message.hasPrefix("Error: ") { message = String(message.dropFirst(7)) }
                throw ValidationError("--device-options \(n): \(message) (it takes --input, --pixel-format, --size, --fps, --set-ctrl, --field, --memory, --dmabuf-from, --buffers)")
            }
        }
        return result
    }
}
