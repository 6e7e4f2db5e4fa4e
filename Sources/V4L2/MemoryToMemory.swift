import CV4L2
import SystemPackage

// Memory-to-memory devices (V4L2_CAP_VIDEO_M2M, V4L2_CAP_VIDEO_M2M_MPLANE): codecs, scalers and
// converters. One open file has two queues: the application writes frames into the OUTPUT queue
// (the device's input) and reads the results from the CAPTURE queue. The kernel's
// Documentation/userspace-api/media/v4l/dev-encoder.rst, dev-decoder.rst and dev-mem2mem.rst
// give the protocol: formats, the drain (ENC_CMD_STOP / DEC_CMD_STOP), the last CAPTURE buffer
// flagged V4L2_BUF_FLAG_LAST, then EPIPE from DQBUF, and the V4L2_EVENT_EOS event.

/// The two queues of a memory-to-memory device's open file.
public struct MemoryToMemoryQueues: Hashable, Sendable, Codable {
    /// The queue the application fills (raw frames for an encoder, the bitstream for a decoder).
    public var output: BufferType
    /// The queue the device fills (the bitstream for an encoder, decoded frames for a decoder).
    public var capture: BufferType

    /// The single-planar pair (V4L2_CAP_VIDEO_M2M).
    public static let singlePlanar = MemoryToMemoryQueues(output: .videoOutput, capture: .videoCapture)
    /// The multi-planar pair (V4L2_CAP_VIDEO_M2M_MPLANE).
    public static let multiplanar = MemoryToMemoryQueues(output: .videoOutputMultiplanar, capture: .videoCaptureMultiplanar)

    public init(output: BufferType, capture: BufferType) {
        self.output = output
        self.capture = capture
    }

    public var isMultiplanar: Bool { output.isMultiplanar }
}

extension DeviceCapabilities {
    /// Whether this node is a memory-to-memory device: V4L2_CAP_VIDEO_M2M or
    /// V4L2_CAP_VIDEO_M2M_MPLANE (a node with both a capture and an output queue of the same
    /// planarity counts too: older drivers announce that instead).
    public var isMemoryToMemory: Bool { memoryToMemoryQueues != nil }

    /// The queue pair of a memory-to-memory node; nil for any other node. Single-planar when the
    /// node offers both.
    public var memoryToMemoryQueues: MemoryToMemoryQueues? {
        let caps = deviceCapabilities
        if caps.contains(.videoM2M) { return .singlePlanar }
        if caps.contains(.videoM2MMultiplanar) { return .multiplanar }
        if caps.contains(.videoCapture) && caps.contains(.videoOutput) { return .singlePlanar }
        if caps.contains(.videoCaptureMultiplanar) && caps.contains(.videoOutputMultiplanar) { return .multiplanar }
        return nil
    }
}

/// What a memory-to-memory device does, told by its formats on each side.
public enum MemoryToMemoryRole: String, Hashable, Sendable, Codable, CustomStringConvertible {
    /// Raw frames in (OUTPUT), a compressed format out (CAPTURE): FWHT, H.264, JPEG, ...
    case encoder
    /// A compressed format in (OUTPUT): the bitstream is decoded into frames on CAPTURE.
    case decoder
    /// Raw frames on both sides: a scaler, a format or colour-space converter, a rotator.
    case converter

    public var description: String { rawValue }

    /// The role from the formats ENUM_FMT lists on each queue: a decoder when any OUTPUT format
    /// is compressed, an encoder when any CAPTURE format is (and no OUTPUT one), a converter when
    /// neither side is. Nil when a side lists no format at all.
    public static func classify(output: [FormatDescription], capture: [FormatDescription]) -> MemoryToMemoryRole? {
        guard !output.isEmpty, !capture.isEmpty else { return nil }
        if output.contains(where: \.isCompressed) { return .decoder }
        if capture.contains(where: \.isCompressed) { return .encoder }
        return .converter
    }
}

/// A memory-to-memory device: its queues, its role and its formats on each side.
public struct MemoryToMemoryDescription: Hashable, Sendable, Codable {
    public var queues: MemoryToMemoryQueues
    /// Nil when a queue lists no format.
    public var role: MemoryToMemoryRole?
    /// The formats the OUTPUT queue takes (what the application writes).
    public var outputFormats: [FormatDescription]
    /// The formats the CAPTURE queue gives (what the device produces).
    public var captureFormats: [FormatDescription]

    public init(queues: MemoryToMemoryQueues, outputFormats: [FormatDescription], captureFormats: [FormatDescription]) {
        self.queues = queues
        self.outputFormats = outputFormats
        self.captureFormats = captureFormats
        self.role = MemoryToMemoryRole.classify(output: outputFormats, capture: captureFormats)
    }
}

extension FormatDescription {
    /// A format description as VIDIOC_ENUM_FMT gives it (for simulators and tests).
    public init(_ pixelFormat: FourCC, bufferType: BufferType, flags: UInt32 = 0, description: String = "", index: UInt32 = 0) {
        self.index = index
        self.bufferType = bufferType
        self.flags = flags
        self.description = description
        self.pixelFormat = pixelFormat
    }
}

// MARK: - Encoder and decoder commands

/// A command to a stateful encoder (`struct v4l2_encoder_cmd`, VIDIOC_ENCODER_CMD).
public struct EncoderCommand: Hashable, Sendable {
    /// `V4L2_ENC_CMD_*`.
    public enum Kind: UInt32, Hashable, Sendable, CaseIterable, CustomStringConvertible {
        /// Resume encoding after a drain (V4L2_ENC_CMD_START).
        case start = 0
        /// Drain: encode what was queued, then mark the last CAPTURE buffer LAST (V4L2_ENC_CMD_STOP).
        case stop = 1
        case pause = 2
        case resume = 3

        public var description: String {
            switch self {
            case .start: return "V4L2_ENC_CMD_START"
            case .stop: return "V4L2_ENC_CMD_STOP"
            case .pause: return "V4L2_ENC_CMD_PAUSE"
            case .resume: return "V4L2_ENC_CMD_RESUME"
            }
        }
    }

    /// `V4L2_ENC_CMD_STOP_*` flags.
    public struct Flags: OptionSet, Hashable, Sendable {
        public var rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Stop at the end of the current group of pictures (V4L2_ENC_CMD_STOP_AT_GOP_END).
        public static let stopAtGOPEnd = Flags(rawValue: 1 << 0)
    }

    public var kind: Kind
    public var flags: Flags

    public init(_ kind: Kind, flags: Flags = []) {
        self.kind = kind
        self.flags = flags
    }

    /// V4L2_ENC_CMD_START.
    public static let start = EncoderCommand(.start)
    /// V4L2_ENC_CMD_STOP: the drain.
    public static let stop = EncoderCommand(.stop)

    /// The C structure.
    public var raw: v4l2_encoder_cmd {
        var raw = v4l2_encoder_cmd()
        raw.cmd = kind.rawValue
        raw.flags = flags.rawValue
        return raw
    }

    /// From the C structure; nil for a command this type does not know.
    public init?(raw: v4l2_encoder_cmd) {
        guard let kind = Kind(rawValue: raw.cmd) else { return nil }
        self.init(kind, flags: Flags(rawValue: raw.flags))
    }
}

/// A command to a decoder (`struct v4l2_decoder_cmd`, VIDIOC_DECODER_CMD).
public struct DecoderCommand: Hashable, Sendable {
    /// `V4L2_DEC_CMD_*`.
    public enum Kind: UInt32, Hashable, Sendable, CaseIterable, CustomStringConvertible {
        /// Resume decoding after a drain (V4L2_DEC_CMD_START).
        case start = 0
        /// Drain: decode what was queued, then mark the last CAPTURE buffer LAST (V4L2_DEC_CMD_STOP).
        case stop = 1
        case pause = 2
        case resume = 3
        /// A stateless decoder: release the held CAPTURE buffer (V4L2_DEC_CMD_FLUSH).
        case flush = 4

        public var description: String {
            switch self {
            case .start: return "V4L2_DEC_CMD_START"
            case .stop: return "V4L2_DEC_CMD_STOP"
            case .pause: return "V4L2_DEC_CMD_PAUSE"
            case .resume: return "V4L2_DEC_CMD_RESUME"
            case .flush: return "V4L2_DEC_CMD_FLUSH"
            }
        }
    }

    /// `V4L2_DEC_CMD_*` flags (their meaning depends on the command).
    public struct Flags: OptionSet, Hashable, Sendable {
        public var rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// START: V4L2_DEC_CMD_START_MUTE_AUDIO.
        public static let muteAudio = Flags(rawValue: 1 << 0)
        /// PAUSE: V4L2_DEC_CMD_PAUSE_TO_BLACK; STOP: V4L2_DEC_CMD_STOP_TO_BLACK.
        public static let toBlack = Flags(rawValue: 1 << 0)
        /// STOP: V4L2_DEC_CMD_STOP_IMMEDIATELY.
        public static let immediately = Flags(rawValue: 1 << 1)
    }

    public var kind: Kind
    public var flags: Flags
    /// STOP: the presentation time stamp to stop at (0: none).
    public var stopPTS: UInt64
    /// START: the speed (0 or 1000 normal).
    public var startSpeed: Int32
    /// START: the format (V4L2_DEC_START_FMT_*; 0 none).
    public var startFormat: UInt32

    public init(_ kind: Kind, flags: Flags = [], stopPTS: UInt64 = 0, startSpeed: Int32 = 0, startFormat: UInt32 = 0) {
        self.kind = kind
        self.flags = flags
        self.stopPTS = stopPTS
        self.startSpeed = startSpeed
        self.startFormat = startFormat
    }

    /// V4L2_DEC_CMD_START.
    public static let start = DecoderCommand(.start)
    /// V4L2_DEC_CMD_STOP: the drain.
    public static let stop = DecoderCommand(.stop)

    /// The C structure.
    public var raw: v4l2_decoder_cmd {
        var raw = v4l2_decoder_cmd()
        raw.cmd = kind.rawValue
        raw.flags = flags.rawValue
        switch kind {
        case .stop: raw.stop.pts = stopPTS
        case .start:
            raw.start.speed = startSpeed
            raw.start.format = startFormat
        default: break
        }
        return raw
    }

    /// From the C structure; nil for a command this type does not know.
    public init?(raw: v4l2_decoder_cmd) {
        guard let kind = Kind(rawValue: raw.cmd) else { return nil }
        switch kind {
        case .stop: self.init(kind, flags: Flags(rawValue: raw.flags), stopPTS: raw.stop.pts)
        case .start: self.init(kind, flags: Flags(rawValue: raw.flags), startSpeed: raw.start.speed, startFormat: raw.start.format)
        default: self.init(kind, flags: Flags(rawValue: raw.flags))
        }
    }
}

// MARK: - Dequeue after a drain

/// What DQBUF gave on a queue that may have reached its end: a buffer, nothing yet (EAGAIN), or
/// EPIPE, which a memory-to-memory device returns on its CAPTURE queue once the buffer flagged
/// ``BufferFlags/last`` was dequeued (after a drain or a decoder's source change).
public enum DrainingDequeue: Hashable, Sendable {
    /// A buffer was dequeued into the descriptor; it is the last one when its flags have ``BufferFlags/last``.
    case buffer
    /// No buffer is ready (EAGAIN on a non-blocking descriptor).
    case notReady
    /// The last buffer was dequeued before: nothing more comes until ENC/DEC_CMD_START (or
    /// STREAMOFF and STREAMON of the CAPTURE queue).
    case afterLastBuffer
}

extension V4L2Error {
    /// DQBUF's EPIPE: the queue's last buffer (flagged ``BufferFlags/last``) was already dequeued.
    public var isAfterLastBuffer: Bool { operation == "VIDIOC_DQBUF" && errno == .brokenPipe }
}

extension DeviceEvent {
    /// An event of `type` with nothing else set, as VIDIOC_DQEVENT gives an EOS event (for
    /// simulators and tests).
    public init(type: UInt32, id: UInt32 = 0) {
        self.init(type: type, id: id, sequence: 0, pending: 0, timestampNanoseconds: 0, sourceChanges: [],
                  frameSequence: 0, controlValue: 0)
    }

    /// V4L2_EVENT_EOS: a decoder or encoder reached the end of the stream (the last CAPTURE
    /// buffer, flagged ``BufferFlags/last``, is or will be ready).
    public var isEndOfStream: Bool { kind == .endOfStream }
}

// MARK: - Control ids of codecs

extension ControlID {
    /// V4L2_CID_MIN_BUFFERS_FOR_OUTPUT.
    public static let minimumBuffersForOutput: UInt32 = CV4L2_CID_MIN_BUFFERS_FOR_OUTPUT
    /// V4L2_CID_MPEG_VIDEO_BITRATE: the target bitrate, bits per second (H.264, VP8 ... encoders).
    public static let videoBitrate: UInt32 = CV4L2_CID_MPEG_VIDEO_BITRATE
    /// V4L2_CID_MPEG_VIDEO_GOP_SIZE: frames from one key frame to the next.
    public static let videoGOPSize: UInt32 = CV4L2_CID_MPEG_VIDEO_GOP_SIZE
    /// V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME: a button; the next frame is encoded as a key frame.
    public static let videoForceKeyFrame: UInt32 = CV4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME
    /// V4L2_CID_FWHT_I_FRAME_QP: the quantization parameter of FWHT (vicodec) key frames, 1...31.
    public static let fwhtIFrameQP: UInt32 = CV4L2_CID_FWHT_I_FRAME_QP
    /// V4L2_CID_FWHT_P_FRAME_QP: the quantization parameter of FWHT predicted frames, 1...31.
    public static let fwhtPFrameQP: UInt32 = CV4L2_CID_FWHT_P_FRAME_QP
}

/// The encoder controls FrameBridge knows by name.
public enum EncoderControl: String, Hashable, Sendable, CaseIterable, Codable, CustomStringConvertible {
    /// ``ControlID/videoBitrate``.
    case bitrate
    /// ``ControlID/videoGOPSize``.
    case gopSize
    /// ``ControlID/videoForceKeyFrame`` (a button).
    case forceKeyFrame
    /// ``ControlID/fwhtIFrameQP``.
    case fwhtIFrameQP
    /// ``ControlID/fwhtPFrameQP``.
    case fwhtPFrameQP

    public var id: UInt32 {
        switch self {
        case .bitrate: return ControlID.videoBitrate
        case .gopSize: return ControlID.videoGOPSize
        case .forceKeyFrame: return ControlID.videoForceKeyFrame
        case .fwhtIFrameQP: return ControlID.fwhtIFrameQP
        case .fwhtPFrameQP: return ControlID.fwhtPFrameQP
        }
    }

    /// The C name.
    public var description: String {
        switch self {
        case .bitrate: return "V4L2_CID_MPEG_VIDEO_BITRATE"
        case .gopSize: return "V4L2_CID_MPEG_VIDEO_GOP_SIZE"
        case .forceKeyFrame: return "V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME"
        case .fwhtIFrameQP: return "V4L2_CID_FWHT_I_FRAME_QP"
        case .fwhtPFrameQP: return "V4L2_CID_FWHT_P_FRAME_QP"
        }
    }

    public init?(id: UInt32) {
        guard let control = EncoderControl.allCases.first(where: { $0.id == id }) else { return nil }
        self = control
    }
}

extension VideoDevice {
    // MARK: - Memory-to-memory

    /// The device's queue pair, when it is a memory-to-memory device.
    public var memoryToMemoryQueues: MemoryToMemoryQueues? { capabilities.memoryToMemoryQueues }

    /// ENUM_FMT on both queues of a memory-to-memory device, and its role; nil for another device.
    /// A stateful encoder's CAPTURE formats come first in its protocol and a decoder's OUTPUT
    /// formats: both are listed as they stand now (before any S_FMT they are all of them).
    public func memoryToMemoryDescription() throws(V4L2Error) -> MemoryToMemoryDescription? {
        guard let queues = memoryToMemoryQueues else { return nil }
        return MemoryToMemoryDescription(queues: queues, outputFormats: try formats(queues.output),
                                         captureFormats: try formats(queues.capture))
    }

    /// VIDIOC_ENCODER_CMD.
    public func encoderCommand(_ command: EncoderCommand) throws(V4L2Error) {
        var raw = command.raw
        if let errno = rawIoctl(CV4L2_VIDIOC_ENCODER_CMD, &raw) {
            throw error("VIDIOC_ENCODER_CMD", errno, detail: "\(command.kind)",
                        hint: errno == .inappropriateIOCTLForDevice ? "the device is not a stateful encoder" : nil)
        }
    }

    /// VIDIOC_TRY_ENCODER_CMD: whether the driver takes `command` now, and how (it may clear flags).
    public func tryEncoderCommand(_ command: EncoderCommand) throws(V4L2Error) -> EncoderCommand {
        var raw = command.raw
        if let errno = rawIoctl(CV4L2_VIDIOC_TRY_ENCODER_CMD, &raw) {
            throw error("VIDIOC_TRY_ENCODER_CMD", errno, detail: "\(command.kind)",
                        hint: errno == .inappropriateIOCTLForDevice ? "the device is not a stateful encoder" : nil)
        }
        return EncoderCommand(raw: raw) ?? command
    }

    /// VIDIOC_DECODER_CMD.
    public func decoderCommand(_ command: DecoderCommand) throws(V4L2Error) {
        var raw = command.raw
        if let errno = rawIoctl(CV4L2_VIDIOC_DECODER_CMD, &raw) {
            throw error("VIDIOC_DECODER_CMD", errno, detail: "\(command.kind)",
                        hint: errno == .inappropriateIOCTLForDevice ? "the device is not a decoder" : nil)
        }
    }

    /// VIDIOC_TRY_DECODER_CMD: whether the driver takes `command` now, and how.
    public func tryDecoderCommand(_ command: DecoderCommand) throws(V4L2Error) -> DecoderCommand {
        var raw = command.raw
        if let errno = rawIoctl(CV4L2_VIDIOC_TRY_DECODER_CMD, &raw) {
            throw error("VIDIOC_TRY_DECODER_CMD", errno, detail: "\(command.kind)",
                        hint: errno == .inappropriateIOCTLForDevice ? "the device is not a decoder" : nil)
        }
        return DecoderCommand(raw: raw) ?? command
    }

    /// VIDIOC_SUBSCRIBE_EVENT for V4L2_EVENT_EOS (see ``DeviceEvent/isEndOfStream``).
    public func subscribeEndOfStream() throws(V4L2Error) {
        try subscribe(.endOfStream)
    }

    /// VIDIOC_DQBUF into `descriptor`, telling EPIPE (the last buffer was dequeued before) from a
    /// failure: ``DrainingDequeue/afterLastBuffer`` instead of a thrown ``V4L2Error``.
    public func dequeueDraining(into descriptor: inout BufferDescriptor) throws(V4L2Error) -> DrainingDequeue {
        do throws(V4L2Error) {
            return try dequeue(into: &descriptor) ? .buffer : .notReady
        } catch {
            if error.isAfterLastBuffer { return .afterLastBuffer }
            throw error
        }
    }

    // MARK: - Encoder controls

    /// The encoder controls of ``EncoderControl`` that the device has, with their ranges.
    public func encoderControls() throws(V4L2Error) -> [EncoderControl: ControlInfo] {
        var result: [EncoderControl: ControlInfo] = [:]
        for info in try controls() {
            if let control = EncoderControl(id: info.id) { result[control] = info }
        }
        return result
    }

    /// The current value of an encoder control (not of ``EncoderControl/forceKeyFrame``, a button).
    public func encoderControlValue(_ control: EncoderControl) throws(V4L2Error) -> Int64 {
        try controlValue(control.id, type: .integer)
    }

    /// Sets an encoder control (for H.264 encoders, bits per second for ``EncoderControl/bitrate``).
    public func setEncoderControl(_ control: EncoderControl, _ value: Int64) throws(V4L2Error) {
        try setControlValue(control.id, value, type: control == .forceKeyFrame ? .button : .integer)
    }

    /// Presses V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME: the next frame is encoded as a key frame.
    public func forceKeyFrame() throws(V4L2Error) {
        try setEncoderControl(.forceKeyFrame, 1)
    }

    /// V4L2_CID_FWHT_I_FRAME_QP and V4L2_CID_FWHT_P_FRAME_QP of an FWHT encoder (vicodec).
    public func setFWHTQuantization(iFrame: Int64, pFrame: Int64) throws(V4L2Error) {
        try setEncoderControl(.fwhtIFrameQP, iFrame)
        try setEncoderControl(.fwhtPFrameQP, pFrame)
    }
}
