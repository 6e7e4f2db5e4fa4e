import FrameBridge
import FrameBridgeTestSupport
import V4L2
import XCTest

/// Several vivid devices in one process through one PinGroup (issue 15): every device's frames
/// arrive with its identity, timestamps on one monotonic clock relate them, and one device's
/// fatal error ends only its stream.
final class VividPinGroupTests: XCTestCase {
    func testThreeDevicesInOneGroupAndOneFailing() throws {
        let paths = [Vivid.main, Vivid.exporter, Vivid.contiguous]
        let devices = try paths.map { try Vivid.open($0) }
        let pins = try devices.map { try CapturePin(device: $0, configuration: Vivid.deterministic(width: 320, height: 180, fps: 30)) }
        for pin in pins { try pin.start() }
        let group = try PinGroup(pins)
        defer { group.stop() }
        var perPin = [0, 0, 0]
        var first: [Int64?] = [nil, nil, nil]
        var last: [Int64] = [0, 0, 0]
        var injected = false
        var ending: (pin: Int, kind: CaptureError.Kind)?
        while perPin[0] < 40 || perPin[1] < 40 {
            if !injected, perPin[2] >= 10 {
                try Vivid.setControl(devices[2], "inject_fatal_streaming_error")
                injected = true
            }
            guard let event = try group.next(timeout: .seconds(10)) else { return XCTFail("no frame within 10 s: \(perPin)") }
            switch consume event {
            case .frame(let pin, let pointer):
                let info = pointer.info
                XCTAssertTrue(info.isMonotonic, "\(paths[pin])")
                XCTAssertGreaterThan(info.timestampNanoseconds, last[pin], "\(paths[pin]): timestamps go forward")
                if first[pin] == nil { first[pin] = info.timestampNanoseconds }
                last[pin] = info.timestampNanoseconds
                perPin[pin] += 1
            case .ended(let pin, let error):
                XCTAssertNil(ending, "one ending only")
                ending = (pin, error.kind)
            case .formatChanged(let pin, let change):
                XCTFail("\(paths[pin]): no source change expected on the webcam input: \(change)")
            case .noSignal(let pin, let loss):
                XCTFail("\(paths[pin]): no signal loss expected on the webcam input: \(loss)")
            }
        }
        XCTAssertEqual(ending?.pin, 2, "the failing device's stream ended: \(String(describing: ending))")
        XCTAssertEqual(ending?.kind, .fatalStreamingError)
        XCTAssertTrue(pins[0].isStreaming && pins[1].isStreaming, "the others go on")
        XCTAssertFalse(pins[2].isStreaming)
        // One clock: the devices started within a second of each other and stayed together.
        let starts = first.compactMap { $0 }
        let skew = Double(starts.max()! - starts.min()!) / 1e6
        let endSkew = Double(abs(last[0] - last[1])) / 1e6
        print("vivid pin group: frames \(perPin), first-frame skew \(String(format: "%.1f", skew)) ms, last frames of 0 and 1 \(String(format: "%.1f", endSkew)) ms apart; \(paths[2]) ended: \(String(describing: ending))")
        XCTAssertLessThan(skew, 2000)
    }
}
