import ArgumentParser
import UVCCamera
#if canImport(Glibc)
import Glibc
#endif

struct FrameSizeArgument: ExpressibleByArgument {
    var size: CameraConfiguration.FrameSize
    init?(argument: String) {
        let parts = argument.lowercased().split(separator: "x")
        guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]),
              (16...1920).contains(w), (16...1080).contains(h), w % 16 == 0, h % 2 == 0 else { return nil }
        size = CameraConfiguration.FrameSize(width: w, height: h)
    }
    static var defaultCompletionKind: CompletionKind { .default }
}

struct FormatList: ExpressibleByArgument {
    var formats: [CameraConfiguration.Format]
    init?(argument: String) {
        var formats: [CameraConfiguration.Format] = []
        for name in argument.lowercased().split(separator: ",") {
            guard let f = CameraConfiguration.Format(rawValue: String(name)), !formats.contains(f) else { return nil }
            formats.append(f)
        }
        guard !formats.isEmpty else { return nil }
        self.formats = formats
    }

    /// The default as --help shows it: as the user types it (`yuyv,mjpeg`), not as a Swift value.
    var defaultValueDescription: String { formats.map(\.rawValue).joined(separator: ",") }
}

@main
struct UVCCameraCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uvc-camera",
        abstract: "An emulated USB Video Class webcam, plugged into this machine's vhci_hcd over USB/IP.",
        discussion: """
        Run it as root inside a VM booted with tools/vivid-vm --uvc. It prints the path of the \
        uvcvideo capture node once the kernel has enumerated the camera, then serves video until \
        killed (that unplugs it too) or until --unplug-after. Frames are deterministic from the \
        first frame of each stream: YUYV shows colour bars under a band that spells the frame \
        number in binary; MJPEG frames are 4:2:2 baseline JPEGs of the same picture (repeating \
        every \(FramePattern.jpegPeriod) frames). The processing unit's brightness and contrast act on luma.
        """)

    @Option(help: "The vhci_hcd high-speed port, 0...7; one camera per port.")
    var port: Int = 0

    @Option(name: .customLong("size"), help: "A frame size WxH (width a multiple of 16); repeat for more. Default: 640x360 and 320x180.")
    var sizes: [FrameSizeArgument] = []

    @Option(help: "The default frame rate; every size also offers half of it.")
    var fps: Int = 30

    @Option(help: "Formats in descriptor order: yuyv, mjpeg or both (comma-separated).")
    var formats: FormatList = FormatList(argument: "yuyv,mjpeg")!

    @Option(help: "Pull the cable (close the USB/IP connection) after this many frames in all.")
    var unplugAfter: Int?

    @Option(help: "Cut every Nth MJPEG frame short (no EOI marker), as real cameras do.")
    var corruptEvery: Int?

    @Option(help: "Set the payload header's ERR bit on every Nth frame.")
    var errorEvery: Int?

    @Option(help: "The serial number string (uvcvideo's bus info stays the port's).")
    var serial: String?

    @Option(help: "The product string, which uvcvideo shows as the card name.")
    var product: String = "FrameBridge UVC Camera"

    @Option(help: "Seconds to wait for uvcvideo to create the video node.")
    var enumerationTimeout: Int = 60

    @Flag(help: "Log stream starts and stops on standard error.")
    var verbose = false

    func validate() throws {
        guard VHCI.highSpeedPorts.contains(port) else { throw ValidationError("--port must be 0...7") }
        guard (1...120).contains(fps) else { throw ValidationError("--fps must be 1...120") }
        for (name, value) in [("--unplug-after", unplugAfter), ("--corrupt-every", corruptEvery), ("--error-every", errorEvery)] {
            if let value, value < 1 { throw ValidationError("\(name) must be at least 1") }
        }
    }

    func run() throws {
        var config = CameraConfiguration()
        if !sizes.isEmpty { config.sizes = sizes.map(\.size) }
        config.framesPerSecond = fps
        config.formats = formats.formats
        config.unplugAfterFrames = unplugAfter
        config.corruptEvery = corruptEvery
        config.errorEvery = errorEvery
        config.product = product
        config.serial = serial ?? "FB-UVC-\(port)"
        let verbose = self.verbose
        let port = self.port

        let socket: Int32
        let server: CameraServer
        do {
            socket = try VHCI.attach(port: port, waitingUpTo: 10)
            server = try CameraServer(socket: socket, configuration: config,
                                      log: { if verbose { writeAll(2, "uvc-camera: \($0)\n") } })
        } catch {
            writeAll(2, "uvc-camera: \(error)\n")
            throw ExitCode(1)
        }
        let deadline = time(nil) + enumerationTimeout
        var found = false
        let watch: () -> Bool = {
            if let node = VHCI.captureNode(port: port) {
                writeAll(1, node + "\n")
                found = true
                return false
            }
            if time(nil) > deadline {
                writeAll(2, "uvc-camera: uvcvideo made no capture node for port \(port) within \(self.enumerationTimeout) s (is uvcvideo loaded? dmesg says why)\n")
                Glibc.exit(1)
            }
            return true
        }
        do {
            let end = try server.run(watch: watch)
            close(socket)
            if verbose { writeAll(2, "uvc-camera: \(end == .unplugged ? "unplugged" : "host closed the connection") after \(server.framesSent) frames\n") }
            if !found && end == .hostClosed {
                writeAll(2, "uvc-camera: vhci_hcd closed the connection before uvcvideo made a node\n")
                throw ExitCode(1)
            }
        } catch let error as ExitCode {
            throw error
        } catch {
            writeAll(2, "uvc-camera: \(error)\n")
            throw ExitCode(1)
        }
    }
}

/// write(2) until all of `text` is out (stdio's stdout/stderr are shared mutable state to Swift 6).
func writeAll(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        done += n
    }
}
