/// Frames of several devices related by their timestamps (CLOCK_MONOTONIC).

/// How far each device's frames lie from the first device's: for every frame of device k > 0,
/// the distance of its timestamp to the nearest frame of device 0 among the last few, corrected
/// when a nearer frame of device 0 comes after it.
///
/// Its memory is bounded whatever the frame count (-n): per device the first
/// ``exactLimit`` distances, from which the median is exact, and a histogram of 1/64-octave
/// bins that takes over for the median beyond them (within 1.6%). The count, the mean and
/// the maximum are exact. Nothing is allocated per frame.
final class SkewMeter {
    private static let window = 4
    /// Distances kept per device for an exact median.
    static let exactLimit = 16_384

    /// One device's distances: the last one stays pending while a later frame of device 0
    /// may still lower it.
    private struct Device {
        var pending: Int64?
        var lastTimestamp: Int64 = 0
        /// Committed distances: how many, their sum and the largest.
        var count = 0
        var total = 0.0
        var maximum: Int64 = 0
        /// The first ``exactLimit`` committed distances.
        var exact: [Int64] = []
        var histogram: SkewHistogram

        mutating func commit(_ distance: Int64) {
            count += 1
            total += Double(distance)
            maximum = max(maximum, distance)
            if exact.count < SkewMeter.exactLimit { exact.append(distance) }
            histogram.add(distance)
        }
    }

    private var reference: [Int64]
    private var referenceCount = 0
    private var devices: [Device]

    /// - Parameter capacity: the frames expected per device; storage is reserved for at most
    ///   ``exactLimit`` of them.
    init(devices: Int, capacity: Int) {
        reference = Array(repeating: 0, count: Self.window)
        let reserved = max(0, min(capacity, Self.exactLimit))
        self.devices = (0..<devices).map { k in
            var device = Device(histogram: SkewHistogram(allocated: k > 0))
            if k > 0 { device.exact.reserveCapacity(reserved) }
            return device
        }
    }

    /// The distances this meter can hold in memory, all devices together (what it allocates,
    /// the histograms aside, which have a fixed size).
    var storedDistanceCapacity: Int { devices.reduce(0) { $0 + $1.exact.capacity } }

    func record(device: Int, timestamp: Int64) {
        if device == 0 {
            reference[referenceCount % Self.window] = timestamp
            referenceCount += 1
            // A device's last frame may lie nearer to this frame than to the earlier ones.
            for k in devices.indices.dropFirst() {
                guard let pending = devices[k].pending else { continue }
                let distance = abs(devices[k].lastTimestamp - timestamp)
                if distance < pending { devices[k].pending = distance }
            }
            return
        }
        guard referenceCount > 0 else { return }
        var nearest = Int64.max
        for i in 0..<min(referenceCount, Self.window) { nearest = min(nearest, abs(timestamp - reference[i])) }
        if let pending = devices[device].pending { devices[device].commit(pending) }
        devices[device].pending = nearest
        devices[device].lastTimestamp = timestamp
    }

    func summary(device k: Int, reference path: String) -> SkewSummary? {
        guard k > 0 else { return nil }
        var device = devices[k]
        if let pending = device.pending { device.commit(pending) }
        guard device.count > 0 else { return nil }
        let median: Int64
        if device.count == device.exact.count {
            median = device.exact.sorted()[device.count / 2]
        } else {
            median = device.histogram.value(atRank: device.count / 2)
        }
        let mean: Double
        if device.count == device.exact.count {
            // Summed in ascending order, as always: the same mean to the last digit.
            var total = 0.0
            for distance in device.exact.sorted() { total += Double(distance) }
            mean = total / Double(device.count) / 1e6
        } else {
            mean = device.total / Double(device.count) / 1e6
        }
        return SkewSummary(reference: path, framesCompared: device.count, medianMilliseconds: Double(median) / 1e6,
                           meanMilliseconds: mean, maximumMilliseconds: Double(device.maximum) / 1e6)
    }
}

/// Counts of non-negative nanosecond distances in bins of 1/64 octave (exact below 64 ns):
/// 3,712 counters whatever the number of values.
struct SkewHistogram {
    private static let subBins = 64
    private static let binCount = 58 * 64
    private var counts: [Int]

    init(allocated: Bool) {
        counts = allocated ? Array(repeating: 0, count: Self.binCount) : []
    }

    static func bin(_ value: Int64) -> Int {
        let value = max(0, value)
        if value < Int64(subBins) { return Int(value) }
        let exponent = 63 - value.leadingZeroBitCount          // 6...62
        let mantissa = Int(value >> (exponent - 6)) & (subBins - 1)
        return (exponent - 5) * subBins + mantissa
    }

    /// The middle of `bin`'s range.
    static func value(ofBin bin: Int) -> Int64 {
        if bin < subBins { return Int64(bin) }
        let exponent = bin / subBins + 5
        let mantissa = Int64(bin % subBins)
        let low = (Int64(subBins) + mantissa) << (exponent - 6)
        return low + (Int64(1) << (exponent - 6)) / 2
    }

    mutating func add(_ value: Int64) {
        counts[Self.bin(value)] += 1
    }

    /// The value of rank `rank` (0 the smallest), within its bin.
    func value(atRank rank: Int) -> Int64 {
        var seen = 0
        for (bin, count) in counts.enumerated() where count > 0 {
            seen += count
            if seen > rank { return Self.value(ofBin: bin) }
        }
        return 0
    }
}
