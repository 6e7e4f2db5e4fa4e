import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// Setting up the device before streaming: the capture queue, the format, the frame rate and
/// the controls, and the framing a configuration would have.
extension CapturePin {
    /// The framing a pin with `configuration` would have, read without owning the queue, so it
    /// works while another process streams: TRY_FMT instead of S_FMT (G_FMT alone when no format
    /// is asked for) and CREATE_BUFS(0) for the capability bits. Only what is asked for is set:
    /// the input (when it is not already selected), the frame rate and the controls.
    public static func proposedFraming(device: VideoDevice, configuration: PinConfiguration = PinConfiguration())
        throws(CaptureError) -> (format: ImageFormat, frameInterval: Fraction?, framing: AllocatorFraming) {
        let bufferType = try CapturePin.bufferType(of: device, configuration: configuration)
        return try capturingErrors(of: device) {
            if let input = configuration.input, (try? device.currentInput()) != input {
                try device.selectInput(input)
            }
            let format: ImageFormat
            if configuration.pixelFormat == nil && configuration.width == nil && configuration.height == nil {
                format = try device.format(bufferType)
            } else {
                format = try negotiateFormat(device: device, bufferType: bufferType, configuration: configuration, commit: false)
            }
            try applyRateAndControls(device: device, bufferType: bufferType, configuration: configuration)
            let interval = try device.frameInterval(bufferType)
            return (format, interval, try AllocatorFraming.query(device: device, bufferType: bufferType, format: format))
        }
    }

    /// Runs `body`, whose calls throw V4L2 or capture errors, as one call that throws a
    /// ``CaptureError`` naming `device`.
    static func capturingErrors<T>(of device: VideoDevice, _ body: () throws -> T) throws(CaptureError) -> T {
        do {
            return try body()
        } catch let error as CaptureError {
            throw error
        } catch let error as V4L2Error {
            throw CaptureError(error)
        } catch {
            throw CaptureError(.device, "\(device.path): \(error)")
        }
    }

    /// The capture queue a pin uses on `device`; an error when it cannot capture by streaming.
    static func bufferType(of device: VideoDevice, configuration: PinConfiguration) throws(CaptureError) -> BufferType {
        let caps = device.capabilities
        // A memory-to-memory device's CAPTURE queue (what an encoder or converter produces) is a
        // pin like any other; its OUTPUT queue is fed by a ``MemoryToMemoryConnection``.
        if !caps.canCapture, let queues = caps.memoryToMemoryQueues {
            guard caps.deviceCapabilities.contains(.streaming) else {
                throw CaptureError(.invalidConfiguration, "\(device.path): the driver does not support streaming I/O")
            }
            return queues.capture
        }
        guard caps.canCapture else {
            throw CaptureError(.invalidConfiguration,
                               "\(device.path): not a video capture device (card \"\(caps.card)\", capabilities: \(caps.deviceCapabilities.names.joined(separator: ", ")))",
                               reason: .notCaptureDevice)
        }
        guard caps.deviceCapabilities.contains(.streaming) else {
            throw CaptureError(.invalidConfiguration, "\(device.path): the driver does not support streaming I/O")
        }
        if configuration.preferMultiplanar && caps.deviceCapabilities.contains(.videoCaptureMultiplanar) {
            return .videoCaptureMultiplanar
        }
        return caps.captureBufferType!
    }

    /// The format for `configuration`: S_FMT when `commit`, else TRY_FMT. A pixel format or size
    /// the driver cannot do is an error, not a silent change.
    static func negotiateFormat(device: VideoDevice, bufferType: BufferType, configuration: PinConfiguration,
                                commit: Bool) throws -> ImageFormat {
        var format = try device.format(bufferType)
        if let pixelFormat = configuration.pixelFormat, pixelFormat != format.pixelFormat {
            let offered = try device.formats(bufferType).map(\.pixelFormat)
            guard offered.contains(pixelFormat) else {
                throw CaptureError(.invalidConfiguration,
                                   "\(device.path): pixel format \(pixelFormat) is not offered (offered: \(offered.map(\.description).joined(separator: ", ")))")
            }
            format.pixelFormat = pixelFormat
        }
        if let width = configuration.width { format.width = width }
        if let height = configuration.height { format.height = height }
        format.planes = configuration.bytesPerLine.map { [PlaneFormat(bytesPerLine: $0, sizeImage: 0)] } ?? []
        format.field = configuration.field.rawValue
        let granted = commit ? try device.setFormat(format) : try device.tryFormat(format)
        let ioctl = commit ? "VIDIOC_S_FMT" : "VIDIOC_TRY_FMT"
        if let pixelFormat = configuration.pixelFormat, granted.pixelFormat != pixelFormat {
            throw CaptureError(.invalidConfiguration, "\(device.path): \(ioctl): the driver replaced pixel format \(pixelFormat) with \(granted.pixelFormat)")
        }
        if let asked = configuration.bytesPerLine, let given = granted.planes.first?.bytesPerLine, given != asked {
            throw CaptureError(.invalidConfiguration,
                               "\(device.path): \(ioctl): bytesperline \(asked) is not supported for \(granted.pixelFormat) \(granted.width)x\(granted.height); the driver gives \(given)")
        }
        if (configuration.width != nil && granted.width != configuration.width)
            || (configuration.height != nil && granted.height != configuration.height) {
            throw CaptureError(.invalidConfiguration,
                               "\(device.path): \(ioctl): size \(configuration.width ?? format.width)x\(configuration.height ?? format.height) is not supported for \(granted.pixelFormat); the nearest is \(granted.width)x\(granted.height) (VIDIOC_ENUM_FRAMESIZES lists the sizes)",
                               reason: .sizeNotSupported)
        }
        return granted
    }

    /// S_PARM for the frame rate and the controls, each only when asked for.
    static func applyRateAndControls(device: VideoDevice, bufferType: BufferType, configuration: PinConfiguration) throws {
        if let fps = configuration.framesPerSecond {
            guard let interval = Fraction(framesPerSecond: fps) else {
                throw CaptureError(.invalidConfiguration, "\(device.path): frame rate \(fps) is outside \(Fraction.framesPerSecondRangeDescription) frames per second")
            }
            _ = try device.setFrameInterval(interval, bufferType)
        }
        for control in configuration.controls {
            guard let info = try device.control(named: control.name) else {
                throw CaptureError(.invalidConfiguration, "\(device.path): no control named \(control.name) (VIDIOC_QUERY_EXT_CTRL lists the controls)",
                                   reason: .noSuchControl)
            }
            // A string or compound control has no integer value to set (S_EXT_CTRLS would say ERANGE).
            guard info.type.isNumeric else {
                throw CaptureError(.invalidConfiguration,
                                   "\(device.path): control \(info.commandLineName) is a \(info.type) control; only integer, boolean, menu, bitmask and button controls can be set")
            }
            if info.type != .button && (control.value < info.minimum || control.value > info.maximum) {
                throw CaptureError(.invalidConfiguration,
                                   "\(device.path): control \(info.commandLineName)=\(control.value) is out of range \(info.minimum)...\(info.maximum)")
            }
            try device.setControlValue(info.id, control.value, type: info.type)
        }
    }
}
