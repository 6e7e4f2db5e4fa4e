import CTurboJPEG
import NIOCore

/// The picture viewers see while a camera has no picture to give: NO SIGNAL, DISCONNECTED or
/// STARTING in large letters on grey, at the size of the last picture, so a player's layout
/// does not jump. Made with the same JPEG encoder as the frames.
enum Placeholder {
    enum Reason: String, Sendable {
        case noSignal = "NO SIGNAL"
        case disconnected = "DISCONNECTED"
        case starting = "STARTING"
    }

    /// A JPEG of `reason`'s words, `width` x `height` (at least 64 x 32).
    static func jpeg(_ reason: Reason, width: UInt32, height: UInt32) -> ByteBuffer? {
        let width = max(64, Int(width)) & ~1, height = max(32, Int(height)) & ~1
        let chromaWidth = width / 2, chromaHeight = height / 2
        var luma = [UInt8](repeating: 48, count: width * height)
        let chroma = [UInt8](repeating: 128, count: chromaWidth * chromaHeight)
        draw(reason.rawValue, into: &luma, width: width, height: height)
        guard let handle = tjInitCompress() else { return nil }
        defer { tjDestroy(handle) }
        var output: UnsafeMutablePointer<UInt8>?
        var size: UInt = 0
        let result = luma.withUnsafeBufferPointer { y in
            chroma.withUnsafeBufferPointer { c in
                var planes: [UnsafePointer<UInt8>?] = [y.baseAddress, c.baseAddress, c.baseAddress]
                var strides: [Int32] = [Int32(width), Int32(chromaWidth), Int32(chromaWidth)]
                return tjCompressFromYUVPlanes(handle, &planes, Int32(width), &strides, Int32(height), Int32(TJSAMP_420.rawValue),
                                               &output, &size, 80, 0)
            }
        }
        guard result == 0, let output else { return nil }
        defer { tjFree(output) }
        var buffer = ByteBufferAllocator().buffer(capacity: Int(size))
        buffer.writeBytes(UnsafeRawBufferPointer(start: output, count: Int(size)))
        return buffer
    }

    /// Writes `text` in white, centred, as large as fits in about 80% of the width.
    static func draw(_ text: String, into luma: inout [UInt8], width: Int, height: Int) {
        let glyphs = text.map { font[$0] ?? font[" "]! }
        let columns = glyphs.count * 6 - 1
        let scale = max(1, min(width * 8 / 10 / columns, height / 3 / 7))
        let left = (width - columns * scale) / 2, top = (height - 7 * scale) / 2
        for (n, glyph) in glyphs.enumerated() {
            for row in 0..<7 {
                let bits = glyph[row]
                for column in 0..<5 where bits & (0b10000 >> column) != 0 {
                    let x0 = left + (n * 6 + column) * scale, y0 = top + row * scale
                    for y in y0..<(y0 + scale) where y >= 0 && y < height {
                        for x in x0..<(x0 + scale) where x >= 0 && x < width { luma[y * width + x] = 235 }
                    }
                }
            }
        }
    }

    /// 5x7 glyphs, one row per byte (bit 4 is the leftmost column), for the words above.
    static let font: [Character: [UInt8]] = [
        " ": [0, 0, 0, 0, 0, 0, 0],
        "A": [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        "C": [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110],
        "D": [0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11110],
        "E": [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111],
        "G": [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111],
        "I": [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        "L": [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111],
        "N": [0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001, 0b10001],
        "O": [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        "R": [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001],
        "S": [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110],
        "T": [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100],
    ]
}
