import FrameBridge
import V4L2

/// What a ``CaptureLoop`` waits on: one device's pin, or a ``PinGroup`` polling several.
protocol FrameSource: AnyObject {
    /// Whether a device of this source can be reconnected after an unplug (one pin can; a
    /// group's pins are fixed).
    var canReconnect: Bool { get }
    /// The next event, its frame into `frame`; nil when the wait timed out or was woken.
    /// Devices are numbered by their place in the source. Throws only when the whole capture
    /// ends (a group with allOrNothing stopped every pin).
    func next(timeout: Duration, frame: inout StreamPointer?) throws(CaptureError) -> FrameSourceEvent?
    /// No more events of `device` (all its frames written, or its stream ended).
    func retire(_ device: Int)
}

/// An event of a ``FrameSource``.
enum FrameSourceEvent {
    /// A frame of `device` is in the `frame` given to ``FrameSource/next(timeout:frame:)``,
    /// or, when it is empty, nothing came.
    case frame(device: Int)
    /// The stream of `device` ended with an error.
    case ended(device: Int, CaptureError)
    case source(device: Int, DeviceCapture.SourceEvent)
}

/// One device's pin (the current one: a reconnect replaces it).
final class PinSource: FrameSource {
    private let capture: DeviceCapture

    init(_ capture: DeviceCapture) {
        self.capture = capture
    }

    var canReconnect: Bool { true }

    func next(timeout: Duration, frame: inout StreamPointer?) throws(CaptureError) -> FrameSourceEvent? {
        do {
            guard let source = try capture.next(timeout: timeout, frame: &frame) else { return .frame(device: 0) }
            return .source(device: 0, source)
        } catch {
            return .ended(device: 0, error)
        }
    }

    func retire(_ device: Int) {}
}

/// Several devices' pins, one poll(2) over all of them.
final class GroupSource: FrameSource {
    let group: PinGroup

    init(_ group: PinGroup) {
        self.group = group
    }

    var canReconnect: Bool { false }

    /// (A function of its own: a `consume` in the loop's long body made Swift 6.3.1's
    /// MovedAsyncVarDebugInfoPropagator pass never finish.)
    func next(timeout: Duration, frame: inout StreamPointer?) throws(CaptureError) -> FrameSourceEvent? {
        let next = try group.next(timeout: timeout)
        guard let event = consume next else { return nil }
        switch consume event {
        case .frame(let pin, let pointer):
            frame = consume pointer
            return .frame(device: pin)
        case .ended(let pin, let error):
            return .ended(device: pin, error)
        case .formatChanged(let pin, let change):
            return .source(device: pin, .formatChanged(change))
        case .noSignal(let pin, let loss):
            return .source(device: pin, .noSignal(loss))
        }
    }

    func retire(_ device: Int) {
        group.retire(pin: device)
    }
}
