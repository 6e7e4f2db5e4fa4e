#if canImport(Glibc)
import Glibc
#endif

/// Serves USB/IP for one emulated camera over a connected stream socket: control transfers on
/// endpoint 0 are answered at once; isochronous IN transfers on 0x81 are held until the camera
/// has video for them and then filled with UVC payloads (2-byte header, FID toggling per frame,
/// EOF on a frame's last payload), one frame per frame interval.
public final class CameraServer {
    public let device: CameraDevice
    private let socket: Int32
    private var input: [UInt8] = []
    private var inputCount = 0
    private var pending: [USBIP.Submit] = []   // isochronous transfers waiting for video
    private let encoder: JPEGEncoder
    private var jpegCache: [JPEGKey: [UInt8]] = [:]
    private let log: (String) -> Void

    // Streaming state.
    private var streaming = false
    private var frame: [UInt8] = []
    private var frameOffset = 0
    private var inFrame = false
    private var frameHasError = false
    private var fid: UInt8 = 0
    private var streamFrameNumber: UInt32 = 0
    private var nextFrameDue: Int64 = 0
    /// Frames sent since the camera was plugged in.
    public private(set) var framesSent = 0
    public private(set) var streamsStarted = 0

    private struct JPEGKey: Hashable {
        var width: Int, height: Int, number: UInt32, brightness: Int, contrast: Int
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(socket: Int32, configuration: CameraConfiguration, log: @escaping (String) -> Void = { _ in }) throws {
        self.socket = socket
        self.device = CameraDevice(configuration: configuration)
        self.encoder = try JPEGEncoder()
        self.log = log
        input = [UInt8](repeating: 0, count: 1 << 20)
    }

    public enum End: Equatable {
        case hostClosed        // vhci_hcd closed the connection (detach, module unload)
        case unplugged         // --unplug-after: the camera pulled its own cable
    }

    /// Runs until the host closes the connection or the camera unplugs itself. `watch` is
    /// called about every 50 ms until it returns false (the CLI looks for its video node there).
    public func run(watch: (() -> Bool)? = nil) throws -> End {
        var watch = watch
        while true {
            if let w = watch, !w() { watch = nil }
            var timeout: Int32 = watch == nil ? -1 : 50
            if streaming && !pending.isEmpty {
                if inFrame {
                    timeout = 0
                } else {
                    let wait = nextFrameDue - Self.now()
                    let due = wait <= 0 ? 0 : Int32(min((wait + 999_999) / 1_000_000, 1000))
                    timeout = timeout < 0 ? due : min(timeout, due)
                }
            }
            var fds = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&fds, 1, timeout)
            if ready < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "poll: \(String(cString: strerror(errno)))")
            }
            if ready > 0 {
                if fds.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                    guard try readAvailable() else { return .hostClosed }
                    try handleMessages()
                }
            }
            while streaming, !pending.isEmpty, inFrame || Self.now() >= nextFrameDue {
                try serveIsochronous()
                if let limit = device.configuration.unplugAfterFrames, framesSent >= limit { return .unplugged }
            }
        }
    }

    static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// Reads what the socket has; false on end of file (or a reset connection).
    private func readAvailable() throws -> Bool {
        if input.count - inputCount < 256 * 1024 { input += [UInt8](repeating: 0, count: input.count) }
        let n = input.withUnsafeMutableBytes { buffer in
            Glibc.read(socket, buffer.baseAddress! + inputCount, buffer.count - inputCount)
        }
        if n < 0 {
            if errno == EINTR || errno == EAGAIN { return true }
            if errno == ECONNRESET { return false }
            throw Failure(description: "read from the USB/IP socket: \(String(cString: strerror(errno)))")
        }
        if n == 0 { return false }
        inputCount += n
        return true
    }

    private func handleMessages() throws {
        var consumed = 0
        while true {
            let parsed = try input.withUnsafeBytes { buffer in
                try USBIP.parse(UnsafeRawBufferPointer(rebasing: buffer[consumed..<inputCount]),
                                isIsochronous: { ep, dir in ep == 1 && dir == .in })
            }
            guard let (message, size) = parsed else { break }
            consumed += size
            switch message {
            case .submit(let submit): try handle(submit)
            case .unlink(let unlink): try handle(unlink)
            }
        }
        if consumed > 0 {
            input.withUnsafeMutableBytes { buffer in
                let base = buffer.baseAddress!
                memmove(base, base + consumed, inputCount - consumed)
            }
            inputCount -= consumed
        }
    }

    private func handle(_ submit: USBIP.Submit) throws {
        if submit.endpoint == 0 {
            let (outcome, event) = device.control(setup: submit.setup, data: submit.data)
            switch outcome {
            case .stall:
                try send(USBIP.returnSubmitHeader(seqnum: submit.seqnum, status: -EPIPE, actualLength: 0,
                                                 startFrame: 0, numberOfPackets: 0, errorCount: 0))
            case .data(let bytes):
                let payload = submit.direction == .in ? bytes : []
                let actual = submit.direction == .in ? Int32(bytes.count) : Int32(submit.data.count)
                try send(USBIP.returnSubmitHeader(seqnum: submit.seqnum, status: 0, actualLength: actual,
                                                 startFrame: 0, numberOfPackets: 0, errorCount: 0), payload)
            }
            switch event {
            case .streamOn: try startStream()
            case .streamOff: stopStream()
            case .none: break
            }
        } else if submit.endpoint == 1 && submit.direction == .in && !submit.isoPackets.isEmpty {
            pending.append(submit)
        } else {
            try send(USBIP.returnSubmitHeader(seqnum: submit.seqnum, status: -EPIPE, actualLength: 0,
                                             startFrame: 0, numberOfPackets: 0, errorCount: 0))
        }
    }

    private func handle(_ unlink: USBIP.Unlink) throws {
        // Every CMD_UNLINK is answered: -ECONNRESET when the transfer was still held here,
        // 0 when it had already been returned.
        var status: Int32 = 0
        if let i = pending.firstIndex(where: { $0.seqnum == unlink.victim }) {
            pending.remove(at: i)
            status = -ECONNRESET
        }
        try send(USBIP.returnUnlinkHeader(seqnum: unlink.seqnum, status: status))
    }

    private func startStream() throws {
        if device.streamFormat == .mjpeg {
            // Encode the stream's pictures before the first frame is due, so that the frame rate
            // does not suffer from the encoder (slow under TCG).
            let size = device.streamSize
            for n in 0..<UInt32(FramePattern.jpegPeriod) { _ = try jpeg(size, n) }
        }
        streaming = true
        streamsStarted += 1
        streamFrameNumber = 0
        inFrame = false
        nextFrameDue = Self.now()
        log("stream on: \(device.streamFormat.rawValue) \(device.streamSize) interval \(device.streamInterval)")
    }

    private func stopStream() {
        streaming = false
        inFrame = false
        log("stream off after \(streamFrameNumber) frames")
    }

    /// The bytes of the next frame of the stream, with its faults.
    private func makeFrame() throws {
        let size = device.streamSize
        let config = device.configuration
        let ordinal = Int(streamFrameNumber) + 1
        switch device.streamFormat {
        case .yuyv:
            let count = size.width * size.height * 2
            if frame.count != count { frame = [UInt8](repeating: 0, count: count) }
            frame.withUnsafeMutableBufferPointer {
                FramePattern.fill(yuyv: $0, width: size.width, height: size.height, frameNumber: streamFrameNumber,
                                  brightness: device.brightness, contrast: device.contrast)
            }
        case .mjpeg:
            frame = try jpeg(size, streamFrameNumber)
            if let n = config.corruptEvery, n > 0, ordinal % n == 0 {
                frame = Array(frame.prefix(frame.count / 2))   // cut short: no EOI
            }
        }
        frameHasError = config.errorEvery.map { $0 > 0 && ordinal % $0 == 0 } ?? false
        frameOffset = 0
        inFrame = true
    }

    /// The MJPEG frame `number` at `size` with the current controls, encoded once.
    private func jpeg(_ size: CameraConfiguration.FrameSize, _ number: UInt32) throws -> [UInt8] {
        let key = JPEGKey(width: size.width, height: size.height, number: number % UInt32(FramePattern.jpegPeriod),
                          brightness: device.brightness, contrast: device.contrast)
        if let cached = jpegCache[key] { return cached }
        if jpegCache.count > 256 { jpegCache.removeAll() }
        let encoded = try FramePattern.jpeg(width: size.width, height: size.height, frameNumber: number,
                                            brightness: device.brightness, contrast: device.contrast, encoder: encoder)
        jpegCache[key] = encoded
        return encoded
    }

    /// Fills the oldest held isochronous transfer and returns it.
    private func serveIsochronous() throws {
        let submit = pending.removeFirst()
        var data: [UInt8] = []
        data.reserveCapacity(Int(submit.transferBufferLength))
        var packets = submit.isoPackets
        for i in packets.indices {
            packets[i].actualLength = 0
            packets[i].status = 0
            if !inFrame {
                // A new frame starts only at its time; until then packets go back empty.
                guard Self.now() >= nextFrameDue else { continue }
                try makeFrame()
                fid ^= 1
            }
            let capacity = Int(packets[i].length)
            guard capacity > 2 else { continue }
            let chunk = min(capacity - 2, frame.count - frameOffset)
            let last = frameOffset + chunk >= frame.count
            var flags: UInt8 = 0x80 | fid            // EOH, FID
            if last { flags |= 0x02 }                // EOF
            if frameHasError { flags |= 0x40 }       // ERR
            data.append(2)
            data.append(flags)
            data.append(contentsOf: frame[frameOffset..<(frameOffset + chunk)])
            frameOffset += chunk
            packets[i].actualLength = UInt32(2 + chunk)
            if last {
                inFrame = false
                framesSent += 1
                streamFrameNumber &+= 1
                let interval = Int64(device.streamInterval) * 100
                nextFrameDue = max(nextFrameDue + interval, Self.now() - interval)
                if let limit = device.configuration.unplugAfterFrames, framesSent >= limit { break }
            }
        }
        try send(USBIP.returnSubmitHeader(seqnum: submit.seqnum, status: 0, actualLength: Int32(data.count),
                                         startFrame: submit.startFrame, numberOfPackets: Int32(packets.count), errorCount: 0),
                 data, USBIP.encode(packets))
    }

    private func send(_ parts: [UInt8]...) throws {
        var message: [UInt8] = []
        message.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        for part in parts { message += part }
        try message.withUnsafeBytes { buffer in
            var sent = 0
            while sent < buffer.count {
                let n = Glibc.write(socket, buffer.baseAddress! + sent, buffer.count - sent)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw Failure(description: "write to the USB/IP socket: \(String(cString: strerror(errno)))")
                }
                sent += n
            }
        }
    }
}
