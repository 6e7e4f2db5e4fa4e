/// The camera's answers on endpoint 0: standard requests (descriptors, configuration,
/// interfaces) and UVC class requests (probe/commit, processing-unit controls).
public final class CameraDevice {
    public let configuration: CameraConfiguration
    public private(set) var brightness = FramePattern.defaultBrightness
    public private(set) var contrast = FramePattern.defaultContrast
    /// The alternate setting of the streaming interface: 1 while streaming.
    public private(set) var streamingAlternate: UInt8 = 0
    public private(set) var probe: StreamParameters
    public private(set) var committed: StreamParameters
    private var errorCode: UInt8 = 0   // VC_REQUEST_ERROR_CODE_CONTROL

    /// Probe and commit control (UVC 1.0: 26 bytes).
    public struct StreamParameters: Equatable, Sendable {
        public var hint: UInt16 = 0
        public var formatIndex: UInt8 = 1
        public var frameIndex: UInt8 = 1
        public var frameInterval: UInt32 = 0
        public var keyFrameRate: UInt16 = 0
        public var pFrameRate: UInt16 = 0
        public var compQuality: UInt16 = 0
        public var compWindowSize: UInt16 = 0
        public var delay: UInt16 = 0
        public var maxVideoFrameSize: UInt32 = 0
        public var maxPayloadTransferSize: UInt32 = 0

        static let size = 26

        init() {}

        init?(_ bytes: [UInt8]) {
            guard bytes.count >= StreamParameters.size else { return nil }
            func u16(_ i: Int) -> UInt16 { UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8 }
            func u32(_ i: Int) -> UInt32 { UInt32(u16(i)) | UInt32(u16(i + 2)) << 16 }
            hint = u16(0); formatIndex = bytes[2]; frameIndex = bytes[3]; frameInterval = u32(4)
            keyFrameRate = u16(8); pFrameRate = u16(10); compQuality = u16(12); compWindowSize = u16(14)
            delay = u16(16); maxVideoFrameSize = u32(18); maxPayloadTransferSize = u32(22)
        }

        var bytes: [UInt8] {
            var b = UVCDescriptors.le16(hint) + [formatIndex, frameIndex] + UVCDescriptors.le32(frameInterval)
            b += UVCDescriptors.le16(keyFrameRate) + UVCDescriptors.le16(pFrameRate) + UVCDescriptors.le16(compQuality)
            b += UVCDescriptors.le16(compWindowSize) + UVCDescriptors.le16(delay)
            b += UVCDescriptors.le32(maxVideoFrameSize) + UVCDescriptors.le32(maxPayloadTransferSize)
            return b
        }
    }

    public init(configuration: CameraConfiguration) {
        self.configuration = configuration
        probe = StreamParameters()
        committed = StreamParameters()
        probe = negotiate(StreamParameters())
        committed = probe
    }

    /// The committed format and size.
    public var streamFormat: CameraConfiguration.Format { configuration.formats[Int(committed.formatIndex) - 1] }
    public var streamSize: CameraConfiguration.FrameSize { configuration.sizes[Int(committed.frameIndex) - 1] }
    public var streamInterval: UInt32 { committed.frameInterval }

    /// Fits a host's proposal to what the camera can do, as a camera answers GET_CUR after SET_CUR.
    func negotiate(_ proposal: StreamParameters) -> StreamParameters {
        var p = proposal
        p.formatIndex = UInt8(min(max(Int(p.formatIndex), 1), configuration.formats.count))
        p.frameIndex = UInt8(min(max(Int(p.frameIndex), 1), configuration.sizes.count))
        let intervals = configuration.frameIntervals
        if p.frameInterval == 0 || !intervals.contains(p.frameInterval) {
            let wanted = p.frameInterval == 0 ? intervals[0] : p.frameInterval
            p.frameInterval = intervals.min(by: { absDiff($0, wanted) < absDiff($1, wanted) })!
        }
        let format = configuration.formats[Int(p.formatIndex) - 1]
        let size = configuration.sizes[Int(p.frameIndex) - 1]
        p.maxVideoFrameSize = UInt32(configuration.maxFrameSize(format, size))
        p.maxPayloadTransferSize = UInt32(UVCDescriptors.maxPayloadTransferSize)
        p.keyFrameRate = 0; p.pFrameRate = 0; p.compWindowSize = 0; p.delay = 0
        if format == .mjpeg && p.compQuality == 0 { p.compQuality = 8500 }
        return p
    }

    private func absDiff(_ a: UInt32, _ b: UInt32) -> UInt32 { a > b ? a - b : b - a }

    public enum Outcome: Equatable {
        case data([UInt8])   // IN data, or an empty answer for OUT
        case stall           // -EPIPE, as a device's STALL handshake
    }

    /// What happened that the streaming side must know.
    public enum Event: Equatable { case none, streamOn, streamOff }

    /// Answers one control transfer.
    public func control(setup: [UInt8], data: [UInt8]) -> (Outcome, Event) {
        let requestType = setup[0], request = setup[1]
        let value = UInt16(setup[2]) | UInt16(setup[3]) << 8
        let index = UInt16(setup[4]) | UInt16(setup[5]) << 8
        let length = Int(UInt16(setup[6]) | UInt16(setup[7]) << 8)
        func answer(_ bytes: [UInt8]) -> (Outcome, Event) { (.data(Array(bytes.prefix(length))), .none) }

        switch (requestType & 0x60) >> 5 {
        case 0: // standard
            switch (requestType, request) {
            case (0x80, 6): // GET_DESCRIPTOR
                switch value >> 8 {
                case 1: return answer(UVCDescriptors.device())
                case 2: return answer(UVCDescriptors.configuration(configuration))
                case 3:
                    guard let s = UVCDescriptors.string(UInt8(value & 0xFF), configuration) else { return (.stall, .none) }
                    return answer(s)
                default: return (.stall, .none)
                }
            case (0x80, 8): return answer([1])           // GET_CONFIGURATION
            case (0x00, 9): return (.data([]), .none)    // SET_CONFIGURATION
            case (0x80, 0), (0x81, 0), (0x82, 0): return answer([0, 0]) // GET_STATUS
            case (0x81, 10): // GET_INTERFACE
                return answer([UInt8(index & 0xFF) == UVCDescriptors.streamingInterface ? streamingAlternate : 0])
            case (0x01, 11): // SET_INTERFACE
                let interface = UInt8(index & 0xFF)
                if interface == UVCDescriptors.controlInterface { return value == 0 ? (.data([]), .none) : (.stall, .none) }
                guard interface == UVCDescriptors.streamingInterface, value <= 1 else { return (.stall, .none) }
                let was = streamingAlternate
                streamingAlternate = UInt8(value)
                if was == 0 && value == 1 { return (.data([]), .streamOn) }
                if was == 1 && value == 0 { return (.data([]), .streamOff) }
                return (.data([]), .none)
            case (0x00, 1), (0x01, 1), (0x02, 1), (0x00, 3), (0x01, 3), (0x02, 3): // CLEAR/SET_FEATURE
                return (.data([]), .none)
            default: return (.stall, .none)
            }
        case 1: // class
            guard requestType & 0x1F == 1 else { return (.stall, .none) } // interface recipient only
            let interface = UInt8(index & 0xFF), entity = UInt8(index >> 8), selector = UInt8(value >> 8)
            let outcome: Outcome?
            if interface == UVCDescriptors.controlInterface {
                outcome = controlInterfaceRequest(entity: entity, selector: selector, request: request, data: data)
            } else if interface == UVCDescriptors.streamingInterface && entity == 0 {
                outcome = streamingRequest(selector: selector, request: request, data: data)
            } else {
                outcome = nil
            }
            guard let outcome else { errorCode = 0x06; return (.stall, .none) } // invalid control
            if case .data(let bytes) = outcome { return answer(bytes) }
            return (outcome, .none)
        default:
            return (.stall, .none)
        }
    }

    // UVC request codes.
    static let setCur: UInt8 = 0x01, getCur: UInt8 = 0x81, getMin: UInt8 = 0x82, getMax: UInt8 = 0x83
    static let getRes: UInt8 = 0x84, getLen: UInt8 = 0x85, getInfo: UInt8 = 0x86, getDef: UInt8 = 0x87

    private func controlInterfaceRequest(entity: UInt8, selector: UInt8, request: UInt8, data: [UInt8]) -> Outcome? {
        if entity == 0 && selector == 0x02 && request == Self.getCur { return .data([errorCode]) }
        guard entity == UVCDescriptors.processingUnitID, selector == 0x02 || selector == 0x03 else { return nil }
        let isBrightness = selector == 0x02
        let range = isBrightness ? FramePattern.brightnessRange : FramePattern.contrastRange
        let current = isBrightness ? brightness : contrast
        let def = isBrightness ? FramePattern.defaultBrightness : FramePattern.defaultContrast
        func word(_ v: Int) -> [UInt8] { UVCDescriptors.le16(UInt16(truncatingIfNeeded: v)) }
        switch request {
        case Self.getCur: errorCode = 0; return .data(word(current))
        case Self.getMin: return .data(word(range.lowerBound))
        case Self.getMax: return .data(word(range.upperBound))
        case Self.getRes: return .data(word(1))
        case Self.getDef: return .data(word(def))
        case Self.getInfo: return .data([0x03])       // GET and SET supported
        case Self.getLen: return .data(word(2))
        case Self.setCur:
            guard data.count >= 2 else { errorCode = 0x05; return .stall }  // wrong state/length
            let raw = UInt16(data[0]) | UInt16(data[1]) << 8
            let v = isBrightness ? Int(Int16(bitPattern: raw)) : Int(raw)
            guard range.contains(v) else { errorCode = 0x04; return .stall }  // out of range
            if isBrightness { brightness = v } else { contrast = v }
            errorCode = 0
            return .data([])
        default: errorCode = 0x07; return .stall
        }
    }

    private func streamingRequest(selector: UInt8, request: UInt8, data: [UInt8]) -> Outcome? {
        guard selector == 0x01 || selector == 0x02 else { return nil } // probe, commit
        let isProbe = selector == 0x01
        switch request {
        case Self.setCur:
            guard let proposal = StreamParameters(data) else { return .stall }
            let fitted = negotiate(proposal)
            if isProbe { probe = fitted } else { committed = fitted; probe = fitted }
            return .data([])
        case Self.getCur: return .data((isProbe ? probe : committed).bytes)
        case Self.getDef: return .data(negotiate(StreamParameters()).bytes)
        case Self.getMin:
            var p = isProbe ? probe : committed
            p.frameInterval = configuration.frameIntervals.min()!
            return .data(negotiate(p).bytes)
        case Self.getMax:
            var p = isProbe ? probe : committed
            p.frameInterval = configuration.frameIntervals.max()!
            return .data(negotiate(p).bytes)
        case Self.getRes: return .data([UInt8](repeating: 0, count: StreamParameters.size))
        case Self.getLen: return .data(UVCDescriptors.le16(UInt16(StreamParameters.size)))
        case Self.getInfo: return .data([0x03])
        default: return .stall
        }
    }
}
