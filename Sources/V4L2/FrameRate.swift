/// Frames per second as a V4L2 frame interval (`timeperframe` of VIDIOC_S_PARM: seconds per frame).
extension Fraction {
    /// The frame rates ``init(framesPerSecond:)`` converts: one frame in 1000 seconds up to a
    /// million frames a second (a frame interval of a microsecond, the resolution of V4L2's
    /// timestamps). Outside it a rate is a mistake, not a request a driver can answer.
    public static let framesPerSecondRange: ClosedRange<Double> = 0.001...1_000_000

    /// ``framesPerSecondRange`` in words, for messages: `0.001 to 1000000`.
    public static var framesPerSecondRangeDescription: String {
        "\(framesPerSecondRange.lowerBound) to \(Int(framesPerSecondRange.upperBound))"
    }

    /// The frame interval of `framesPerSecond`, exact for the rates people ask for:
    /// - whole rates: 30 is 1/30;
    /// - the NTSC rates, whole rates times 1000/1001, as typed (29.97, 59.94, 23.976) or exact:
    ///   29.97 is 1001/30000;
    /// - whole seconds per frame: 0.5 is 2/1;
    /// - any other rate: the nearest fraction whose terms are at most 1,000,000 (12.5 is 2/25).
    ///
    /// Nil for a rate outside ``framesPerSecondRange``, zero, negative, infinite or NaN: no
    /// frame interval with a non-zero denominator says it, and it must not reach the driver.
    public init?(framesPerSecond: Double) {
        guard framesPerSecond.isFinite, Fraction.framesPerSecondRange.contains(framesPerSecond) else { return nil }
        let fps = framesPerSecond
        if fps == fps.rounded() {
            self.init(1, UInt32(fps))
            return
        }
        // NTSC: N * 1000/1001 frames a second, typed with two or three decimals (29.97 is
        // 2e-6 from 30000/1001 relative to it; any rate typed that close means the NTSC one).
        let ntsc = (fps * 1.001).rounded()
        if ntsc >= 1, ntsc * 1000 <= Double(UInt32.max), abs(fps - ntsc * 1000 / 1001) <= fps * 2e-6 {
            self.init(1001, UInt32(ntsc) * 1000)
            return
        }
        let seconds = 1 / fps
        if seconds == seconds.rounded() {
            self.init(UInt32(seconds), 1)
            return
        }
        // The last convergent of the continued fraction of `seconds` whose terms fit.
        let largest = 1_000_000.0
        var (previousNumerator, numerator) = (0.0, 1.0)
        var (previousDenominator, denominator) = (1.0, 0.0)
        var rest = seconds
        for _ in 0..<64 {
            let whole = rest.rounded(.down)
            let nextNumerator = whole * numerator + previousNumerator
            let nextDenominator = whole * denominator + previousDenominator
            if nextNumerator > largest || nextDenominator > largest { break }
            (previousNumerator, numerator) = (numerator, nextNumerator)
            (previousDenominator, denominator) = (denominator, nextDenominator)
            let fraction = rest - whole
            if fraction < 1e-12 || abs(numerator / denominator - seconds) <= seconds * 1e-12 { break }
            rest = 1 / fraction
        }
        guard numerator >= 1, denominator >= 1 else { return nil }
        self.init(UInt32(numerator), UInt32(denominator))
    }

    /// The frame rate of this frame interval (0 for a zero numerator).
    public var framesPerSecond: Double { numerator == 0 ? 0 : Double(denominator) / Double(numerator) }
}
