import FrameBridge
import FrameBridgeTestSupport
import V4L2
import XCTest

/// The pin follows a source change (issue 13, item 2) on vivid's HDMI input (3): the source's
/// timings are changed through a second file handle of the same node (what another process
/// turning vivid's controls is to the driver) while the pin streams. The pin reports the
/// change before the first frame of the new size, never hands out a frame of the wrong size,
/// survives "no signal", and runs allocator selection again.
///
/// The timings and no-signal cases use /dev/video2, as VividLiveSourceTests does; the allocator
/// case needs USERPTR, which only the vmalloc nodes have: /dev/video0. Each puts the HDMI
/// input's signal mode back to 0 (current timings) and selects input 0 at the end.
final class VividSourceChangeTests: XCTestCase {
    private static let yuyvBytesPerPixel = 2

    func testFollowsATimingsChangeMadeThroughAnotherHandle() throws {
        let path = Vivid.contiguous
        let (device, other, hdmi) = try openHDMI(path, timings: "1280x720p60")
        defer { restore(other, hdmi: hdmi) }
        let pin = try CapturePin(device: device, configuration: PinConfiguration(input: hdmi, pixelFormat: .yuyv))
        defer { pin.stop() }
        XCTAssertEqual([pin.format.width, pin.format.height], [1280, 720])
        let started = try pin.start()
        XCTAssertEqual(pin.formatGeneration, 0)
        // sizeimage (and bytesused) includes vivid's data offset in multi-planar mode; the payload is the picture.
        let oldSize = Int(pin.format.planes[0].sizeImage)
        for _ in 0..<5 {
            let frame = try nextFrame(pin)
            XCTAssertEqual(frame.planes[0].bytesUsed, oldSize, "\(path): frame before the change")
            XCTAssertEqual(frame.planes[0].payloadSize, 1280 * 720 * Self.yuyvBytesPerPixel)
            XCTAssertEqual(frame.formatGeneration, 0)
        }

        try Vivid.setControl(other, "dv_timings", try menuIndex(other, "640x480p59"))
        var framesBeforeChange = 0
        var change: FormatChange?
        let waitStart = MonotonicClock.nanoseconds()
        while change == nil {
            guard MonotonicClock.nanoseconds() - waitStart < 10_000_000_000 else { return XCTFail("\(path): no format change within 10 s") }
            guard let event = try pin.nextEvent(timeout: .seconds(10), keepLeadingEdge: false) else { continue }
            switch consume event {
            case .frame(let pointer):
                // Frames dequeued before the pin saw the event: the old format, consistently.
                XCTAssertEqual(pointer.info.planes[0].bytesUsed, oldSize, "\(path): a frame before the change event")
                framesBeforeChange += 1
            case .formatChanged(let changed): change = changed
            case .noSignal(let loss): return XCTFail("\(path): unexpected no signal: \(loss)")
            }
        }
        let followed = try XCTUnwrap(change)
        XCTAssertEqual([followed.previous.width, followed.previous.height], [1280, 720])
        XCTAssertEqual([followed.format.width, followed.format.height], [640, 480])
        XCTAssertEqual(followed.format.pixelFormat, .yuyv)
        XCTAssertEqual(followed.input, hdmi)
        XCTAssertTrue(followed.changes.contains(.resolution), "\(followed.changes)")
        XCTAssertEqual(followed.timings.map { [$0.width, $0.height] }, [640, 480])
        XCTAssertEqual(followed.generation, 1)
        XCTAssertFalse(followed.afterNoSignal)
        XCTAssertEqual(pin.formatGeneration, 1)
        XCTAssertEqual(pin.format, followed.format)
        XCTAssertTrue(pin.isStreaming)
        XCTAssertEqual(followed.selection.chosen.name, started.chosen.name, "same (empty) candidates, same default")
        XCTAssertNotNil(pin.selection)
        let newSize = Int(followed.format.planes[0].sizeImage)
        XCTAssertEqual(followed.framing.items.first?.bufferSize, newSize)

        // Every frame after the change has the new size, and they keep coming.
        var firstNew: FrameInfo?
        for _ in 0..<15 {
            let frame = try nextFrame(pin)
            if firstNew == nil { firstNew = frame }
            XCTAssertEqual(frame.planes[0].bytesUsed, newSize, "\(path): a frame after the change has the old size")
            XCTAssertEqual(frame.planes[0].payloadSize, 640 * 480 * Self.yuyvBytesPerPixel)
            XCTAssertEqual(frame.formatGeneration, 1, "the frame says which format it has")
        }
        let statistics = pin.statistics
        XCTAssertEqual(statistics.sourceChanges, 1)
        XCTAssertEqual(statistics.droppedAtSourceChange, followed.framesDropped)
        let first = try XCTUnwrap(firstNew)
        print(String(format: "source change: 1280x720 -> 640x480 through a second handle of %@; %d frame(s) of the old size before the event was seen, %d dropped at STREAMOFF; event to restart %.1f ms, event to first new frame %.1f ms; allocator %@",
                     path, framesBeforeChange, followed.framesDropped,
                     Double(followed.restartedNanoseconds - followed.eventTimestampNanoseconds) / 1e6,
                     Double(first.timestampNanoseconds - followed.eventTimestampNanoseconds) / 1e6, followed.selection.chosen.name))
    }

    func testNoSignalIsReportedAndTheSignalComingBackRestarts() throws {
        let path = Vivid.contiguous
        let (device, other, hdmi) = try openHDMI(path, timings: "1280x720p60")
        defer { restore(other, hdmi: hdmi) }
        let pin = try CapturePin(device: device, configuration: PinConfiguration(input: hdmi, pixelFormat: .yuyv))
        defer { pin.stop() }
        try pin.start()
        let size = Int(pin.format.planes[0].sizeImage)
        for _ in 0..<3 { XCTAssertEqual(try nextFrame(pin).planes[0].bytesUsed, size) }

        try Vivid.setControl(other, "dv_timings_signal_mode", 1)
        var loss: SignalLoss?
        let lossStart = MonotonicClock.nanoseconds()
        while loss == nil {
            guard MonotonicClock.nanoseconds() - lossStart < 10_000_000_000 else { return XCTFail("\(path): no signal loss reported within 10 s") }
            guard let event = try pin.nextEvent(timeout: .seconds(10), keepLeadingEdge: false) else { continue }
            switch consume event {
            case .frame(let pointer): XCTAssertEqual(pointer.info.planes[0].bytesUsed, size)
            case .formatChanged(let change): return XCTFail("\(path): a format change instead of no signal: \(change.format)")
            case .noSignal(let lost): loss = lost
            }
        }
        let lost = try XCTUnwrap(loss)
        XCTAssertEqual(lost.input, hdmi)
        XCTAssertTrue(lost.detail.contains("ENOLINK") || lost.status?.contains(.noSignal) == true, "\(lost)")
        XCTAssertFalse(pin.isStreaming)
        XCTAssertTrue(pin.isFollowingSourceChange)
        XCTAssertNotNil(pin.signalLoss)
        // While there is no signal, each wait lasts its timeout and returns nil.
        for _ in 0..<3 {
            let before = MonotonicClock.nanoseconds()
            if let unexpected = try pin.nextEvent(timeout: .milliseconds(300)) {
                switch consume unexpected {
                case .frame: XCTFail("\(path): a frame while there is no signal")
                case .formatChanged(let change): XCTFail("\(path): a format change while there is no signal: \(change.format)")
                case .noSignal: XCTFail("\(path): no signal reported twice for one loss")
                }
            }
            let waited = Double(MonotonicClock.nanoseconds() - before) / 1e6
            XCTAssertGreaterThanOrEqual(waited, 250, "the wait lasted its timeout")
        }

        // The signal comes back with the current timings: a format change (the same size), then frames.
        try Vivid.setControl(other, "dv_timings_signal_mode", 0)
        let backAt = MonotonicClock.nanoseconds()
        var restored: FormatChange?
        while restored == nil {
            guard MonotonicClock.nanoseconds() - backAt < 10_000_000_000 else { return XCTFail("\(path): no restart within 10 s of the signal coming back") }
            guard let event = try pin.nextEvent(timeout: .seconds(10), keepLeadingEdge: false) else { continue }
            switch consume event {
            case .frame: return XCTFail("\(path): a frame before the format change that ends the no-signal wait")
            case .formatChanged(let change): restored = change
            case .noSignal(let again): return XCTFail("\(path): still no signal: \(again)")
            }
        }
        let back = try XCTUnwrap(restored)
        XCTAssertTrue(back.afterNoSignal)
        XCTAssertEqual([back.format.width, back.format.height], [1280, 720])
        XCTAssertTrue(pin.isStreaming)
        XCTAssertNil(pin.signalLoss)
        var firstBack: FrameInfo?
        for _ in 0..<5 {
            let frame = try nextFrame(pin)
            if firstBack == nil { firstBack = frame }
            XCTAssertEqual(frame.planes[0].bytesUsed, Int(back.format.planes[0].sizeImage))
        }
        let first = try XCTUnwrap(firstBack)
        print(String(format: "no signal: reported as \"%@\"; 3 waits of 300 ms returned nil; signal back: restart %.1f ms after the event, first frame %.1f ms after it",
                     lost.description, Double(back.restartedNanoseconds - back.eventTimestampNanoseconds) / 1e6,
                     Double(first.timestampNanoseconds - back.eventTimestampNanoseconds) / 1e6))
    }

    func testACandidateThatNoLongerFitsIsRejectedAfterTheChange() throws {
        let path = Vivid.main
        let (device, other, hdmi) = try openHDMI(path, timings: "640x480p59")
        defer { restore(other, hdmi: hdmi) }
        let pin = try CapturePin(device: device, configuration: PinConfiguration(input: hdmi, pixelFormat: .yuyv))
        defer { pin.stop() }
        XCTAssertEqual([pin.format.width, pin.format.height], [640, 480])
        let smallFrame = Int(pin.format.planes[0].sizeImage)
        // A vendor allocator whose buffers hold a 640x480 YUYV frame (sizeimage) and no more.
        let candidate = UserPointerAllocator(planeSizes: [smallFrame])
        let started = try pin.start(AllocatorSelection(candidates: [candidate]))
        XCTAssertTrue(started.chosen === candidate, "\(started.rejections)")
        XCTAssertFalse(started.fellBackToDefault)
        for _ in 0..<3 { XCTAssertEqual(try nextFrame(pin).planes[0].bytesUsed, smallFrame) }

        try Vivid.setControl(other, "dv_timings", try menuIndex(other, "1280x720p60"))
        var change: FormatChange?
        let waitStart = MonotonicClock.nanoseconds()
        while change == nil {
            guard MonotonicClock.nanoseconds() - waitStart < 10_000_000_000 else { return XCTFail("\(path): no format change within 10 s") }
            guard let event = try pin.nextEvent(timeout: .seconds(10), keepLeadingEdge: false) else { continue }
            switch consume event {
            case .frame(let pointer): XCTAssertEqual(pointer.info.planes[0].bytesUsed, smallFrame)
            case .formatChanged(let changed): change = changed
            case .noSignal(let loss): return XCTFail("\(path): unexpected no signal: \(loss)")
            }
        }
        let followed = try XCTUnwrap(change)
        XCTAssertEqual([followed.format.width, followed.format.height], [1280, 720])
        let largeFrame = Int(followed.format.planes[0].sizeImage)
        XCTAssertGreaterThanOrEqual(largeFrame, 1280 * 720 * Self.yuyvBytesPerPixel)
        XCTAssertTrue(followed.selection.fellBackToDefault)
        XCTAssertFalse(followed.selection.chosen === candidate)
        XCTAssertTrue(followed.selection.chosen is KernelPoolAllocator, followed.selection.chosen.name)
        let rejection = try XCTUnwrap(followed.selection.rejections.first, "the candidate is rejected")
        XCTAssertEqual(rejection.allocator, candidate.name)
        XCTAssertTrue(rejection.reason.contains("\(smallFrame)") && rejection.reason.contains("\(largeFrame)"), rejection.reason)
        XCTAssertEqual(pin.selection?.rejections.first?.reason, rejection.reason)
        XCTAssertEqual(pin.allocator?.name, followed.selection.chosen.name)
        for _ in 0..<5 { XCTAssertEqual(try nextFrame(pin).planes[0].bytesUsed, largeFrame) }
        print("source change with allocator selection: 640x480 -> 1280x720 on \(path); \(candidate.name) rejected (\(rejection.reason)); now \(followed.selection.chosen.name); \(followed.framesDropped) frame(s) dropped at STREAMOFF")
    }

    func testARestartWaitsForAHeldFrameAndCancelsIt() throws {
        let path = Vivid.contiguous
        let (device, other, hdmi) = try openHDMI(path, timings: "1280x720p60")
        defer { restore(other, hdmi: hdmi) }
        let pin = try CapturePin(device: device, configuration: PinConfiguration(input: hdmi, pixelFormat: .yuyv))
        defer { pin.stop() }
        try pin.start()
        // The default keeps the leading edge on the frame too: two holders, the edge's and ours.
        guard var held = try pin.next(timeout: .seconds(10)) else { return XCTFail("\(path): no frame within 10 s") }
        XCTAssertEqual(held.info.planes[0].payloadSize, 1280 * 720 * Self.yuyvBytesPerPixel)
        try Vivid.setControl(other, "dv_timings", try menuIndex(other, "640x480p59"))
        // The event is seen on the next wait; the buffers cannot go back (REQBUFS 0) while a
        // frame is held, so the waits end at their timeout with nothing to hand out.
        for _ in 0..<2 {
            if let event = try pin.nextEvent(timeout: .milliseconds(300)) {
                switch consume event {
                case .frame(let pointer): XCTFail("\(path): a frame (\(pointer.info.planes[0].payloadSize) bytes) while the change waits for the held one")
                case .formatChanged: XCTFail("\(path): restarted while a frame of the old stream was held")
                case .noSignal(let loss): XCTFail("\(path): unexpected no signal: \(loss)")
                }
            }
        }
        XCTAssertTrue(pin.isFollowingSourceChange)
        XCTAssertFalse(pin.isStreaming)
        XCTAssertFalse(held.isValid, "the held frame was cancelled at STREAMOFF")
        XCTAssertThrowsError(try held.lock()) { XCTAssertEqual(($0 as? CaptureError)?.kind, .frameCancelled, "\($0)") }
        XCTAssertEqual(pin.livePointers, 1)
        _ = consume held
        XCTAssertEqual(pin.livePointers, 0)
        let before = MonotonicClock.nanoseconds()
        guard let event = try pin.nextEvent(timeout: .seconds(10)) else { return XCTFail("\(path): no restart within 10 s of the release") }
        switch consume event {
        case .formatChanged(let change):
            XCTAssertEqual([change.format.width, change.format.height], [640, 480])
        case .frame: return XCTFail("\(path): a frame before the format change")
        case .noSignal(let loss): return XCTFail("\(path): unexpected no signal: \(loss)")
        }
        let restart = Double(MonotonicClock.nanoseconds() - before) / 1e6
        XCTAssertEqual(try nextFrame(pin).planes[0].payloadSize, 640 * 480 * Self.yuyvBytesPerPixel)
        print(String(format: "source change with a held frame: the restart waited for it (cancelled, lock refused), then took %.1f ms after the release; cancelled frames counted: %d",
                     restart, pin.statistics.cancelledFrames))
    }

    func testAGroupReportsOnePinsChangeAndTheOtherGoesOn() throws {
        let (device, other, hdmi) = try openHDMI(Vivid.contiguous, timings: "1280x720p60")
        defer { restore(other, hdmi: hdmi) }
        let webcam = try Vivid.open(Vivid.main)
        let live = try CapturePin(device: device, configuration: PinConfiguration(input: hdmi, pixelFormat: .yuyv))
        let steady = try CapturePin(device: webcam, configuration: Vivid.deterministic())
        try live.start()
        try steady.start()
        let group = try PinGroup([live, steady])
        defer { group.stop() }
        var sizes = [Int(live.format.planes[0].sizeImage), Int(steady.format.planes[0].sizeImage)]
        var frames = [0, 0]
        var afterChange = [0, 0]
        var requested = false
        var change: FormatChange?
        let start = MonotonicClock.nanoseconds()
        while change == nil || afterChange[0] < 10 || afterChange[1] < 10 {
            guard MonotonicClock.nanoseconds() - start < 30_000_000_000 else {
                return XCTFail("group: frames \(frames), after the change \(afterChange), change \(change.map { "\($0.format.width)x\($0.format.height)" } ?? "none") within 30 s")
            }
            if !requested, frames[0] >= 5 {
                try Vivid.setControl(other, "dv_timings", try menuIndex(other, "640x480p59"))
                requested = true
            }
            guard let event = try group.next(timeout: .seconds(10)) else { continue }
            switch consume event {
            case .frame(let pin, let pointer):
                XCTAssertEqual(pointer.info.planes[0].bytesUsed, sizes[pin], "pin \(pin): a frame of another size than the pin's format")
                frames[pin] += 1
                if change != nil { afterChange[pin] += 1 }
            case .formatChanged(let pin, let changed):
                XCTAssertEqual(pin, 0, "only the HDMI pin changes")
                XCTAssertTrue(requested)
                XCTAssertNil(change, "one change")
                XCTAssertEqual([changed.format.width, changed.format.height], [640, 480])
                sizes[pin] = Int(changed.format.planes[0].sizeImage)
                change = changed
            case .noSignal(let pin, let loss): return XCTFail("pin \(pin): unexpected no signal: \(loss)")
            case .ended(let pin, let error): return XCTFail("pin \(pin) ended: \(error)")
            }
        }
        XCTAssertTrue(live.isStreaming && steady.isStreaming)
        print("group source change: HDMI pin 1280x720 -> 640x480 reported as .formatChanged(pin: 0); frames \(frames), \(afterChange) after it; the webcam pin went on")
    }

    func testFollowsAStandardChangeOnTheTVInput() throws {
        let path = Vivid.contiguous
        let device = try Vivid.open(path)
        let other = try Vivid.open(path)
        let tv = try XCTUnwrap(try device.inputs().first { $0.capabilityFlags.contains(.standards) }, "\(path) has no TV input").index
        defer {
            try? other.selectInput(tv)
            try? Vivid.setControl(other, "standard_signal_mode", 0)
            try? other.selectInput(0)
        }
        try device.selectInput(tv)
        let pal = try XCTUnwrap(try device.standards().first { $0.name.hasPrefix("PAL") })
        try device.setStandard(pal.id)
        // The source sends the selected standard: PAL first, as set.
        try Vivid.setControl(device, "standard_signal_mode", 4)
        try Vivid.setControl(device, "standard", try menuIndex(device, "PAL-B", control: "standard"))
        // The size asked for: G_FMT may still hold another test's (a 720x288 field format).
        var configuration = PinConfiguration(input: tv, pixelFormat: .yuyv, width: 720, height: 576)
        configuration.field = .interlaced
        let pin = try CapturePin(device: device, configuration: configuration)
        defer { pin.stop() }
        XCTAssertEqual([pin.format.width, pin.format.height], [720, 576])
        try pin.start()
        for _ in 0..<3 { XCTAssertEqual(try nextFrame(pin).planes[0].payloadSize, 720 * 576 * Self.yuyvBytesPerPixel) }

        try Vivid.setControl(other, "standard", try menuIndex(other, "NTSC-M", control: "standard"))
        var change: FormatChange?
        let waitStart = MonotonicClock.nanoseconds()
        while change == nil {
            guard MonotonicClock.nanoseconds() - waitStart < 10_000_000_000 else { return XCTFail("\(path): no format change within 10 s") }
            guard let event = try pin.nextEvent(timeout: .seconds(10), keepLeadingEdge: false) else { continue }
            switch consume event {
            case .frame(let pointer): XCTAssertEqual(pointer.info.planes[0].payloadSize, 720 * 576 * Self.yuyvBytesPerPixel)
            case .formatChanged(let changed): change = changed
            case .noSignal(let loss): return XCTFail("\(path): unexpected no signal: \(loss)")
            }
        }
        let followed = try XCTUnwrap(change)
        XCTAssertEqual([followed.format.width, followed.format.height], [720, 480])
        // The configured field is asked for again (vivid may name the NTSC order).
        XCTAssertTrue([FieldOrder.interlaced, .interlacedTopBottom, .interlacedBottomTop].map(\.rawValue).contains(followed.format.field),
                      "field \(followed.format.field)")
        let standard = try XCTUnwrap(followed.standard, "the detected standard is reported")
        XCTAssertNotEqual(standard & StandardID.ntsc, 0, StandardID.name(standard))
        XCTAssertNil(followed.timings)
        XCTAssertNotEqual(try device.standard() & StandardID.ntsc, 0, "S_STD applied it")
        for _ in 0..<3 { XCTAssertEqual(try nextFrame(pin).planes[0].payloadSize, 720 * 480 * Self.yuyvBytesPerPixel) }
        print("standard change: TV input PAL 720x576 -> \(StandardID.name(standard)) \(followed.format.width)x\(followed.format.height), field \(followed.format.field), \(followed.framesDropped) frame(s) dropped at STREAMOFF")
    }

    // MARK: - Helpers

    /// Opens `path` twice (the pin's handle and the "other process"), selects the HDMI input,
    /// sets vivid's source to the preset named `timings` and applies it, so the pin starts at that size.
    private func openHDMI(_ path: String, timings: String) throws -> (VideoDevice, VideoDevice, UInt32) {
        let device = try Vivid.open(path)
        let other = try Vivid.open(path)
        let hdmi = try XCTUnwrap(try device.inputs().first { $0.capabilityFlags.contains(.dvTimings) }, "\(path) has no HDMI input").index
        try device.selectInput(hdmi)
        try Vivid.setControl(device, "dv_timings_signal_mode", 4)
        try Vivid.setControl(device, "dv_timings", try menuIndex(device, timings))
        try device.setDVTimings(try device.queryDVTimings())
        return (device, other, hdmi)
    }

    /// vivid's dv_timings (and standard) menus have an order of their own: the item by name.
    private func menuIndex(_ device: VideoDevice, _ prefix: String, control: String = "dv_timings") throws -> Int64 {
        let menu = try XCTUnwrap(try device.control(named: control), "\(device.path) has no \(control) control").menuItems
        return Int64(try XCTUnwrap(menu.first { $0.name.hasPrefix(prefix) }, "\(menu.map(\.name))").index)
    }

    /// Signal mode 0 (current timings) on the HDMI input, then input 0, through the second
    /// handle (the pin has been stopped by then: its defer runs first).
    private func restore(_ device: VideoDevice, hdmi: UInt32) {
        try? device.selectInput(hdmi)
        try? Vivid.setControl(device, "dv_timings_signal_mode", 0)
        try? device.selectInput(0)
    }

    /// The next frame's info (the pointer is released at once), failing on anything else.
    private func nextFrame(_ pin: CapturePin, file: StaticString = #filePath, line: UInt = #line) throws -> FrameInfo {
        guard let event = try pin.nextEvent(timeout: .seconds(10), keepLeadingEdge: false) else {
            throw CaptureError(.invalidState, "\(pin.device.path): no frame within 10 s")
        }
        switch consume event {
        case .frame(let pointer): return pointer.info
        case .formatChanged(let change):
            XCTFail("\(pin.device.path): unexpected format change to \(change.format.width)x\(change.format.height)", file: file, line: line)
            throw CaptureError(.invalidState, "unexpected format change")
        case .noSignal(let loss):
            XCTFail("\(pin.device.path): unexpected no signal: \(loss)", file: file, line: line)
            throw CaptureError(.invalidState, "unexpected no signal")
        }
    }
}
