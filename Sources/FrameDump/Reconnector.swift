import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// `--reconnect`: after an unplug, waits for the same device to come back (same bus info and
/// card, whatever its node number), checks that it streams the same format and starts a pin on
/// it. It counts the reconnects, the time without the device and the statistics of the pins
/// before the current one.
struct Reconnector {
    let options: CaptureOptions
    /// Statistics of the pins before the current one.
    private(set) var earlierStatistics = CaptureStatistics()
    private(set) var reconnects = 0
    private(set) var disconnectedNanoseconds: Int64 = 0

    init(options: CaptureOptions) {
        self.options = options
    }

    /// The device that came back and the pin started on it.
    struct Reconnected {
        var device: VideoDevice
        var pin: CapturePin
    }

    /// Stops `pin` (its device is gone), waits for the device, starts a pin on it in `format`
    /// and attaches `stopFlag` to it. Returns nil when a stop was requested meanwhile.
    mutating func reconnect(device: VideoDevice, pin: CapturePin, format: ImageFormat,
                            stopFlag: StopFlag) throws(FrameDumpError) -> Reconnected? {
        let identity = device.capabilities
        let lost = MonotonicClock.nanoseconds()
        pin.stop()
        let deadline = Clock.deadline(lost, plusSeconds: options.reconnectWaitSeconds)
        guard let returned = try find(identity, deadline: deadline, stopFlag: stopFlag, path: device.path) else { return nil }
        let newPin = try start(on: returned, format: format)
        stopFlag.detach()
        stopFlag.attach(wakeupDescriptor: newPin.wakeupDescriptor)
        // The old pin's counts move here only as it is replaced: until then the capture adds
        // them itself (a failed reconnect counted them twice).
        earlierStatistics = earlierStatistics.adding(pin.statistics)
        reconnects += 1
        disconnectedNanoseconds += MonotonicClock.nanoseconds() - lost
        return Reconnected(device: returned, pin: newPin)
    }

    /// The device with `identity`'s bus info and card, looked for every 200 ms until `deadline`.
    private func find(_ identity: DeviceCapabilities, deadline: Int64, stopFlag: StopFlag, path: String) throws(FrameDumpError) -> VideoDevice? {
        while true {
            if stopFlag.isRequested { return nil }
            for candidatePath in DeviceListing.videoDevicePaths() {
                guard let candidate = try? VideoDevice(path: candidatePath, backend: options.backend) else { continue }
                let caps = candidate.capabilities
                if caps.busInfo == identity.busInfo && caps.card == identity.card && caps.canCapture {
                    return candidate
                }
            }
            guard MonotonicClock.nanoseconds() < deadline else {
                throw .runtime("\(path): the device was disconnected and did not come back within \(FrameDumpFormatting.decimal(options.reconnectWaitSeconds)) s (looked for bus \(identity.busInfo), card \(identity.card); --reconnect-timeout changes the limit)")
            }
            usleep(200_000)
        }
    }

    /// A pin on the device that came back, started, when its format is still `format`.
    private func start(on returned: VideoDevice, format: ImageFormat) throws(FrameDumpError) -> CapturePin {
        do {
            try options.format.checkControls(on: returned)
            let newPin = try CapturePin(device: returned, configuration: options.format.pinConfiguration(
                errorFramePolicy: options.errorFramePolicy, corruptFramePolicy: options.corruptFramePolicy))
            let newFormat = newPin.format
            guard newFormat.pixelFormat == format.pixelFormat, newFormat.width == format.width, newFormat.height == format.height,
                  newFormat.planes.map(\.sizeImage) == format.planes.map(\.sizeImage),
                  newFormat.planes.map(\.bytesPerLine) == format.planes.map(\.bytesPerLine) else {
                throw FrameDumpError.runtime("\(returned.path): the device came back with another format (\(newFormat.pixelFormat) \(newFormat.width)x\(newFormat.height), was \(format.pixelFormat) \(format.width)x\(format.height)); the output holds the frames before the disconnect")
            }
            let candidate = try AllocatorPlan.candidate(memory: options.memory, source: options.dmabufSource, format: newFormat,
                                                        backend: options.backend)
            let selection = AllocatorPlan.selection(candidate: candidate, memory: options.memory, frameCount: options.buffers)
            let result = try newPin.start(selection)
            if result.fellBackToDefault {
                newPin.stop()
                throw FrameDumpError.runtime(CaptureReport.rejectionMessage(memory: options.memory, path: returned.path,
                                                                            candidate: candidate, rejections: result.rejections))
            }
            return newPin
        } catch let error as FrameDumpError {
            throw error
        } catch {
            throw FrameDumpError.wrap(error)
        }
    }
}
