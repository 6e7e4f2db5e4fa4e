import FrameBridge
import V4L2

/// Before a pin is made: an input that says it has no signal would stream noise. With
/// --wait-for-signal this waits for the signal; without, the capture fails naming the input.
/// Whether there is a signal is ``SignalDetection``'s word, the same the pin follows.
enum SignalWait {
    /// Selects `--input`, then checks the input's signal. With --wait-for-signal it waits for
    /// the signal (a source-change event, POLLPRI; a driver without events is asked again each
    /// 200 ms) and applies the timings it brings; without, it fails naming the input. Returns
    /// the input and how long it waited, nil when the signal was there.
    static func awaitSignal(_ device: VideoDevice, options: CaptureOptions) throws(FrameDumpError) -> (input: UInt32, nanoseconds: Int64)? {
        do {
            if let input = options.format.input, (try? device.currentInput()) != input { try device.selectInput(input) }
        } catch {
            throw FrameDumpError(error)
        }
        guard var loss = signalLoss(device) else {
            try applyDetectedTimings(device)
            return nil
        }
        guard let wait = options.waitForSignalSeconds else {
            throw .runtime("\(device.path): no signal on input \(loss.input) (\(loss.detail)); connect the source, or --wait-for-signal SECONDS waits for it")
        }
        let start = MonotonicClock.nanoseconds()
        let deadline = Clock.deadline(start, plusSeconds: wait)
        let subscribed = (try? device.subscribe(.sourceChange, id: loss.input)) != nil
        defer { if subscribed { try? device.unsubscribe(.sourceChange, id: loss.input) } }
        while true {
            let left = deadline - MonotonicClock.nanoseconds()
            guard left > 0 else {
                throw .runtime("\(device.path): no signal on input \(loss.input) within \(FrameDumpFormatting.decimal(wait)) s (\(loss.detail); --wait-for-signal)")
            }
            // Woken by the source-change event; a driver without events is asked again each 200 ms.
            let slice = subscribed ? left : min(left, 200_000_000)
            _ = try? device.poll(events: [.priority], timeoutMilliseconds: Int32(clamping: slice / 1_000_000 + (slice % 1_000_000 > 0 ? 1 : 0)))
            while subscribed, (try? device.dequeueEvent()) ?? nil != nil {}
            guard let still = signalLoss(device) else { break }
            loss = still
        }
        try applyDetectedTimings(device)
        return (loss.input, MonotonicClock.nanoseconds() - start)
    }

    /// On a DV input: the timings the source sends (QUERY_DV_TIMINGS) when they differ from those
    /// set (G_DV_TIMINGS); on an analog one, the standard it sends (QUERYSTD) when the one set
    /// (G_STD) is not among those detected. The capture starts in the source's format, not in
    /// one left over (a PAL source read as NTSC would be 480 of its 576 lines, rolling).
    static func applyDetectedTimings(_ device: VideoDevice) throws(FrameDumpError) {
        do {
            if let timings = try? device.queryDVTimings() {
                if let current = try? device.dvTimings(), current != timings { _ = try device.setDVTimings(timings) }
            } else if let detected = try? device.queryStandard(), !SignalDetection.isSignalLoss(detectedStandard: detected),
                      let current = try? device.standard(), current & detected == 0 {
                try device.setStandard(detected)
            }
        } catch {
            throw FrameDumpError(error)
        }
    }

    /// The current input's lack of signal, if it has none.
    static func signalLoss(_ device: VideoDevice) -> (input: UInt32, detail: String)? {
        guard let input = try? device.currentInput(), let info = (try? device.inputs())?.first(where: { $0.index == input }) else {
            return nil
        }
        if info.capabilityFlags.contains(.dvTimings) {
            do {
                _ = try device.queryDVTimings()
            } catch {
                if SignalDetection.isSignalLoss(error) { return (input, error.description) }
            }
        }
        if SignalDetection.isSignalLoss(status: info.statusFlags) { return (input, "VIDIOC_ENUMINPUT: status no signal") }
        return nil
    }
}
