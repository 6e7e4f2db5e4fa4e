#if canImport(Glibc)
import Glibc
#endif

/// A live progress line (`frames, fps, drops`) on a terminal, rewritten with `\r` at most
/// about four times a second and cleared at the end.
public final class ProgressLine {
    private let descriptor: Int32
    private let intervalNanoseconds: Int64
    private var lastUpdate: Int64 = 0
    private var shown = false

    /// The line for standard error when it is a terminal and `quiet` is false; nil otherwise.
    public static func forStandardError(quiet: Bool) -> ProgressLine? {
        guard !quiet, isatty(2) == 1 else { return nil }
        return ProgressLine(descriptor: 2)
    }

    public init(descriptor: Int32, intervalMilliseconds: Int = 250) {
        self.descriptor = descriptor
        intervalNanoseconds = Int64(intervalMilliseconds) * 1_000_000
    }

    /// Whether an update is due (cheap: one clock read).
    @inline(__always)
    public func isDue(now: Int64) -> Bool {
        now - lastUpdate >= intervalNanoseconds
    }

    /// Shows the line.
    public func show(frames: Int, total: Int, fps: Double, dropped: Int, now: Int64) {
        lastUpdate = now
        let text = "\r\u{1B}[Kframes \(frames)/\(total)  \(FrameDumpFormatting.decimal(fps, digits: 1)) fps  dropped \(dropped)"
        write(text)
        shown = true
    }

    /// Shows the line for several devices: each one's frames, and the frame rate of all together.
    public func show(devices frames: [Int], total: Int, seconds: Double, dropped: Int, now: Int64) {
        lastUpdate = now
        let all = frames.reduce(0, +)
        let fps = seconds > 0 ? Double(all) / seconds : 0
        let each = frames.map(String.init).joined(separator: " ")
        write("\r\u{1B}[Kframes \(each) of \(total) each  \(FrameDumpFormatting.decimal(fps, digits: 1)) fps in all  dropped \(dropped)")
        shown = true
    }

    /// Clears the line.
    public func clear() {
        guard shown else { return }
        write("\r\u{1B}[K")
        shown = false
    }

    private func write(_ text: String) {
        var bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let written = bytes.withUnsafeMutableBytes { Glibc.write(descriptor, $0.baseAddress! + done, $0.count - done) }
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            done += written
        }
        bytes.removeAll()
    }
}
