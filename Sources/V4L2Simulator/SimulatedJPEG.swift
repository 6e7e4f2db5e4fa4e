import CTurboJPEG
import V4L2

/// The JPEG pictures a simulated MJPEG camera sends, encoded with TurboJPEG once per format.
public enum SimulatedJPEG {
    /// The RGB test picture of variant `variant`: eight colour bars, a horizontal luma ramp in
    /// the bottom quarter, and a white square whose position depends on the variant.
    public static func pattern(width: Int, height: Int, variant: Int) -> [UInt8] {
        let bars: [(UInt8, UInt8, UInt8)] = [(235, 235, 235), (235, 235, 16), (16, 235, 235), (16, 235, 16),
                                              (235, 16, 235), (235, 16, 16), (16, 16, 235), (16, 16, 16)]
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        let square = max(8, min(width, height) / 6)
        let squareX = (variant * square * 2 / 3) % max(1, width - square)
        let squareY = height / 3
        for y in 0..<height {
            for x in 0..<width {
                var pixel: (UInt8, UInt8, UInt8)
                if y >= height * 3 / 4 {
                    let v = UInt8(truncatingIfNeeded: x * 255 / max(1, width - 1))
                    pixel = (v, v, v)
                } else {
                    pixel = bars[min(7, x * 8 / max(1, width))]
                }
                if x >= squareX && x < squareX + square && y >= squareY && y < squareY + square { pixel = (250, 250, 250) }
                let i = (y * width + x) * 3
                rgb[i] = pixel.0
                rgb[i + 1] = pixel.1
                rgb[i + 2] = pixel.2
            }
        }
        return rgb
    }

    /// A baseline JPEG of `pattern(width:height:variant:)` with TurboJPEG subsampling
    /// `subsampling` (TJSAMP_*) and quality `quality`; nil if TurboJPEG fails.
    public static func encode(width: Int, height: Int, variant: Int, subsampling: Int32, quality: Int32) -> [UInt8]? {
        guard let handle = tjInitCompress() else { return nil }
        defer { tjDestroy(handle) }
        let rgb = pattern(width: width, height: height, variant: variant)
        var output: UnsafeMutablePointer<UInt8>?
        var size: UInt = 0
        let result = rgb.withUnsafeBufferPointer { source in
            tjCompress2(handle, source.baseAddress, Int32(width), Int32(width * 3), Int32(height), Int32(TJPF_RGB.rawValue),
                        &output, &size, subsampling, quality, TJFLAG_ACCURATEDCT)
        }
        defer { if let output { tjFree(output) } }
        guard result == 0, let output else { return nil }
        return Array(UnsafeBufferPointer(start: output, count: Int(size)))
    }
}

/// The encoded frames of the current MJPEG format (made when first needed, kept while the size stays).
struct SimulatedJPEGFrames {
    var width: UInt32
    var height: UInt32
    var subsampling: Int32
    var frames: [[UInt8]]
}
