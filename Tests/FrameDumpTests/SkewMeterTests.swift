@testable import FrameDump
import FrameBridge
import Foundation
import V4L2Simulator
import XCTest

/// The skew of several devices' frames to the first device's (``SkewMeter``).
final class SkewMeterTests: XCTestCase {
    /// Resident memory of the process in bytes (/proc/self/statm).
    private func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The memory does not grow with the frame count asked for (-n): 2 devices x 20 million
    /// frames took 320 MB before the first frame.
    func testMemoryDoesNotScaleWithTheFrameCount() {
        let before = residentBytes()
        let meter = SkewMeter(devices: 2, capacity: 20_000_000)
        meter.record(device: 0, timestamp: 1_000)
        meter.record(device: 1, timestamp: 1_500)
        let grown = residentBytes() - before
        XCTAssertLessThan(grown, 16 << 20, "SkewMeter for -n 20000000 took \(grown) bytes")
        XCTAssertEqual(meter.summary(device: 1, reference: "/dev/video0")?.framesCompared, 1)
        // What it holds: at most exactLimit distances per device, at -n 1000000000 too.
        XCTAssertLessThanOrEqual(SkewMeter(devices: 3, capacity: 1_000_000_000).storedDistanceCapacity, 2 * SkewMeter.exactLimit + 64)
        XCTAssertLessThanOrEqual(SkewMeter(devices: 3, capacity: 10).storedDistanceCapacity, 2 * 10 + 64)
    }

    /// Beyond the exact distances: the count, mean and maximum stay exact, the median comes
    /// from the histogram within 1/64 of its value, and the stored distances stay bounded.
    func testManyFramesKeepTheSummaryWithBoundedStorage() throws {
        let meter = SkewMeter(devices: 2, capacity: 1_000_000)
        let frames = SkewMeter.exactLimit * 3 + 7
        var distances: [Int64] = []
        for n in 0..<frames {
            let base = Int64(n) * 33_333_333
            meter.record(device: 0, timestamp: base)
            // Distances from 0 to about 5 ms, spread unevenly.
            let distance = Int64((n * 7919) % 5_003) * 997
            meter.record(device: 1, timestamp: base + distance)
            distances.append(distance)
        }
        let skew = try XCTUnwrap(meter.summary(device: 1, reference: "A"))
        let sorted = distances.sorted()
        let exactMedian = Double(sorted[sorted.count / 2]) / 1e6
        XCTAssertEqual(skew.framesCompared, frames)
        XCTAssertEqual(skew.maximumMilliseconds, Double(sorted.last!) / 1e6)
        XCTAssertEqual(skew.meanMilliseconds, Double(distances.reduce(0, +)) / Double(frames) / 1e6, accuracy: 1e-6)
        XCTAssertEqual(skew.medianMilliseconds, exactMedian, accuracy: exactMedian / 64)
        XCTAssertLessThanOrEqual(meter.storedDistanceCapacity, 2 * SkewMeter.exactLimit)
    }

    /// The histogram's bins: exact below 64 ns, then 64 per power of two, each value inside
    /// its bin's range, up to Int64.max.
    func testHistogramBins() {
        for value: Int64 in [0, 1, 63] {
            XCTAssertEqual(SkewHistogram.value(ofBin: SkewHistogram.bin(value)), value)
        }
        for value: Int64 in [64, 65, 127, 128, 1_000_000, 33_333_333, 1 << 40, .max] {
            let middle = SkewHistogram.value(ofBin: SkewHistogram.bin(value))
            XCTAssertLessThanOrEqual(abs(Double(middle) - Double(value)), Double(value) / 64, "\(value)")
        }
        XCTAssertEqual(SkewHistogram.bin(.max), 58 * 64 - 1)
    }

    /// Several devices with a huge -n: the capture starts without a table of devices x n
    /// integers (16 GB at -n 1000000000, 320 MB at -n 20000000), and a stop ends it with the
    /// skew measured.
    func testSeveralDevicesWithAHugeFrameCountCapture() throws {
        let backend = SimulatedV4L2Backend()
        let paths = ["/dev/video10", "/dev/video11"]
        for path in paths { backend.addDevice(path: path) }
        let stop = StopFlag()
        let session = MultiCaptureSession(options: paths.map {
            CaptureOptions(devicePath: $0, backend: backend, count: 20_000_000, frameTimeoutSeconds: 2)
        }, stopFlag: stop)
        let before = residentBytes()
        var grown = 0
        session.afterFrame = { device, frames in
            if device == 1, frames >= 5, !stop.isRequested {
                grown = self.residentBytes() - before
                stop.request()
            }
        }
        let summary = try session.run()
        XCTAssertTrue(summary.interrupted)
        XCTAssertLessThan(grown, 64 << 20, "two devices at -n 20000000 took \(grown) bytes")
        XCTAssertGreaterThanOrEqual(summary.devices[1].framesWritten, 5)
        XCTAssertNotNil(summary.devices[1].skew)
    }

    /// A small case, worked by hand: device 1's offsets to the nearest of device 0's last four
    /// frames, the last one corrected by a nearer frame of device 0 that came after it.
    func testSkewSummaryOfASmallCase() throws {
        let meter = SkewMeter(devices: 3, capacity: 10)
        let ms: Int64 = 1_000_000
        meter.record(device: 1, timestamp: 5 * ms)        // before any reference frame: not counted
        meter.record(device: 0, timestamp: 100 * ms)
        meter.record(device: 1, timestamp: 103 * ms)      // 3 ms
        meter.record(device: 2, timestamp: 90 * ms)       // 10 ms
        meter.record(device: 0, timestamp: 133 * ms)      // device 2's 10 ms stays; device 1's 3 stays
        meter.record(device: 1, timestamp: 140 * ms)      // 7 ms, then corrected to 6 by the next reference frame
        meter.record(device: 0, timestamp: 146 * ms)
        meter.record(device: 1, timestamp: 171 * ms)      // 25 ms to 146
        meter.record(device: 2, timestamp: 150 * ms)      // 4 ms
        XCTAssertNil(meter.summary(device: 0, reference: "A"))
        let one = try XCTUnwrap(meter.summary(device: 1, reference: "A"))
        check(one, compared: 3, median: 6, mean: (3.0 + 6 + 25) / 3, maximum: 25)
        let two = try XCTUnwrap(meter.summary(device: 2, reference: "A"))
        check(two, compared: 2, median: 10, mean: 7, maximum: 10)
    }

    private func check(_ skew: SkewSummary, compared: Int, median: Double, mean: Double, maximum: Double,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(skew.reference, "A", file: file, line: line)
        XCTAssertEqual(skew.framesCompared, compared, file: file, line: line)
        XCTAssertEqual(skew.medianMilliseconds, median, accuracy: 1e-9, file: file, line: line)
        XCTAssertEqual(skew.meanMilliseconds, mean, accuracy: 1e-9, file: file, line: line)
        XCTAssertEqual(skew.maximumMilliseconds, maximum, accuracy: 1e-9, file: file, line: line)
    }
}
