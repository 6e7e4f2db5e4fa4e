import ArgumentParser
import FrameDump
import FrameServe
import SystemPackage
import V4L2
#if canImport(Glibc)
import Glibc
#endif

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the cameras' live pictures over HTTP (MJPEG), for browsers and restreamers.",
        discussion: """
        Pages: /stream (multipart/x-mixed-replace JPEG; each part has Content-Length, X-Timestamp \
        (the driver's CLOCK_MONOTONIC timestamp) and X-Frame-Sequence), /snapshot (the newest \
        picture), /state (JSON: the source format, captured and sent fps, drops, the encoder, one \
        entry per viewer), and / (the live picture with a statistics panel). mjpg-streamer's \
        /?action=stream and /?action=snapshot work too. With several -d, camera N is at /N/stream, \
        /N/snapshot and /N/.

        One capture per camera, however many viewers: each frame is made JPEG once (libjpeg-turbo \
        from the mapped buffer, no RGB step; an MJPEG camera's frames are passed through after \
        validation, never a truncated one) and every viewer sends that one buffer. A slow viewer \
        skips to the newest picture and never slows the capture or the other viewers.

        A source that goes away does not end the stream: viewers see a NO SIGNAL or DISCONNECTED \
        picture at the last size until the picture returns, at its new size if it changed. \
        --no-reconnect, --reconnect-timeout and --wait-for-signal make the server give up (exit 1) \
        instead.

        Safety: it listens on 127.0.0.1 unless --listen says otherwise; --auth-file turns on HTTP \
        Basic authentication; only GET and HEAD are served, nothing from the file system; a request \
        head over 8 KiB gets 431, one that does not arrive within 10 s gets 408, a malformed one 400, \
        and connections beyond --max-clients 503. SIGINT/SIGTERM stop it (exit 0).
        """
    )

    @OptionGroup var device: CaptureDeviceOptions
    @OptionGroup var format: FormatArguments
    @OptionGroup var memory: MemoryArguments

    @Option(name: .customLong("listen"), help: ArgumentHelp("Where to listen (default 127.0.0.1:8080; 0.0.0.0:PORT for every interface).", valueName: "ADDR:PORT"),
            transform: ListenAddress.parse)
    var listen: ListenAddress?

    @Option(name: .customLong("quality"), parsing: .unconditional, help: ArgumentHelp("JPEG quality of encoded frames, 1...100 (default 80).", valueName: "N"))
    var quality: Int = 80

    @Option(name: .customLong("drop-same-frames"), parsing: .unconditional,
            help: ArgumentHelp("Skip a picture identical to the last one sent, up to N in a row (default 0: send all).", valueName: "N"))
    var dropSameFrames: Int = 0

    @Option(name: .customLong("max-clients"), parsing: .unconditional, help: ArgumentHelp("Connections served at once (default 64); beyond, 503.", valueName: "N"))
    var maxClients: Int = 64

    @Option(name: .customLong("idle-stop"), parsing: .unconditional,
            help: ArgumentHelp("Stream only while someone watches: close the device this many seconds after the last viewer leaves; the next viewer opens it.", valueName: "SECONDS"))
    var idleStop: Double?

    @Flag(name: .customLong("reconnect"), inversion: .prefixedNo,
          help: "After an unplug, wait for the same device (matched by bus info and card, not node number) and stream on (default on).")
    var reconnect = true

    @Option(name: .customLong("reconnect-timeout"), parsing: .unconditional,
            help: ArgumentHelp("Give up (exit 1) when the device has not come back within this many seconds (default: wait).", valueName: "SECONDS"))
    var reconnectTimeout: Double?

    @Option(name: .customLong("wait-for-signal"), parsing: .unconditional,
            help: ArgumentHelp("Give up (exit 1) when a source has had no signal for this many seconds (default: wait, showing NO SIGNAL).", valueName: "SECONDS"))
    var waitForSignal: Double?

    @Option(name: .customLong("auth-file"), help: ArgumentHelp("HTTP Basic authentication: a file of user:password lines.", valueName: "FILE"))
    var authFile: String?

    @Flag(name: .customLong("json"), help: "On exit, print the last /state as JSON on standard output.")
    var json = false

    func validate() throws {
        guard (1...100).contains(quality) else { throw ValidationError("--quality \(quality): must be 1...100") }
        guard dropSameFrames >= 0, dropSameFrames <= 10_000 else { throw ValidationError("--drop-same-frames \(dropSameFrames): must be 0...10000") }
        guard (1...10_000).contains(maxClients) else { throw ValidationError("--max-clients \(maxClients): must be 1...10000") }
        for (name, value) in [("--idle-stop", idleStop), ("--reconnect-timeout", reconnectTimeout), ("--wait-for-signal", waitForSignal)] {
            if let value, !(value >= 0 && value <= 86_400 * 365) {
                throw ValidationError("\(name) \(value): must be a number of seconds from 0 to one year")
            }
        }
    }

    func run() throws {
        var options = ServeOptions(cameras: device.devices.map { path in
            ServeOptions.Camera(path: path, format: format.options, memory: memory.memory, dmabufSource: memory.dmabufFrom,
                                buffers: memory.buffers, backend: device.backend)
        })
        let address = listen ?? ListenAddress(host: "127.0.0.1", port: 8080)
        options.host = address.host
        options.port = address.port
        options.quality = quality
        options.dropSameFrames = dropSameFrames
        options.maxClients = maxClients
        options.idleStopSeconds = idleStop
        options.reconnect = reconnect
        options.reconnectTimeoutSeconds = reconnectTimeout
        options.waitForSignalSeconds = waitForSignal
        if let authFile { options.credentials = try Self.credentials(authFile) }

        StopSignals.install()
        let server: LiveViewServer
        do {
            server = try LiveViewServer(options: options)
            try server.start()
        } catch {
            throw error.frameDumpError
        }
        printError("framedump: serving http://\(server.localAddress.map(Self.display) ?? "\(address.host):\(address.port)")/ (\(device.devices.joined(separator: ", "))); SIGINT or SIGTERM stops\n")
        let wakeup = try WakeupEvent()
        StopSignals.flag.attach(wakeupDescriptor: wakeup.descriptor)
        var failure: String?
        while !StopSignals.flag.isRequested {
            var entry = pollfd(fd: wakeup.descriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&entry, 1, 500)
            if let given = server.failure {
                failure = given
                break
            }
        }
        StopSignals.flag.detach()
        let state = server.stateJSON
        server.stop()
        if json { printOutput(state + "\n") }
        if let failure { throw FrameDumpError.runtime(failure) }
    }

    /// `user:password` lines (blank lines and # comments skipped).
    static func credentials(_ path: String) throws(FrameDumpError) -> [String] {
        guard let file = fopen(path, "r") else { throw .usage("--auth-file \(path): cannot read it: \(Errno.current)") }
        defer { fclose(file) }
        var lines: [String] = []
        var buffer = [CChar](repeating: 0, count: 4096)
        var number = 0
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            number += 1
            let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                .trimmingCharacters(in: " \t\r\n")
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw .usage("--auth-file \(path): line \(number) is not user:password")
            }
            lines.append(line)
        }
        guard !lines.isEmpty else { throw .usage("--auth-file \(path): no user:password line in it") }
        return lines
    }

    /// NIO's "[IPv4]127.0.0.1/127.0.0.1:8080" as "127.0.0.1:8080".
    static func display(_ address: String) -> String {
        guard let slash = address.lastIndex(of: "/") else { return address }
        return String(address[address.index(after: slash)...])
    }
}

/// `--listen ADDR:PORT`.
struct ListenAddress: Sendable {
    var host: String
    var port: Int

    static func parse(_ text: String) throws -> ListenAddress {
        guard let colon = text.lastIndex(of: ":") else {
            throw ValidationError("--listen \(text): expected ADDR:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        guard let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--listen \(text): the port must be a number 0...65535")
        }
        return ListenAddress(host: host, port: port)
    }
}

private extension String {
    func trimmingCharacters(in set: String) -> String {
        let characters = Set(set)
        var slice = Substring(self)
        while let first = slice.first, characters.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, characters.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}

private extension Error {
    var frameDumpError: FrameDumpError {
        if let error = self as? ServeError {
            switch error {
            case .usage(let message): return .usage(message)
            case .runtime(let message): return .runtime(message)
            }
        }
        if let error = self as? FrameDumpError { return error }
        return .runtime("\(self)")
    }
}
