/// The bytes a simulated device writes into a frame: a deterministic function of the
/// frame's sequence number, the plane and the byte offset in the plane.
///
/// The offset counts from the start of the plane's memory, so in multi-planar mode the
/// `data_offset` header of plane 0 is part of the pattern too: the payload is bytes
/// `0..<bytesused` and the pixels start at `data_offset`.
///
/// The pattern is `offset & 0xff` XOR a key that depends on (sequence, plane, offset / 256),
/// so two frames, two planes or two positions shifted by any amount are told apart, and
/// a frame is written eight bytes at a time.
public enum SimulatedPattern {
    /// The byte at `offset` of `plane` in the frame with `sequence`.
    @inlinable
    public static func byte(sequence: UInt32, plane: Int, offset: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: offset) ^ key(sequence: sequence, plane: plane, block: offset >> 8)
    }

    /// The key of one 256-byte block.
    @inlinable
    static func key(sequence: UInt32, plane: Int, block: Int) -> UInt8 {
        var x = UInt32(truncatingIfNeeded: block) &* 0x9E37_79B1
        x ^= sequence &* 0x85EB_CA77
        x ^= UInt32(truncatingIfNeeded: plane &+ 1) &* 0xC2B2_AE3D
        x ^= x >> 15
        x &*= 0x2C1B_3C6D
        x ^= x >> 12
        x &*= 0x297A_2D39
        x ^= x >> 15
        return UInt8(truncatingIfNeeded: x >> 24)
    }

    /// Eight pattern bytes starting at an offset that is a multiple of 8, as a little-endian word.
    @inline(__always)
    static func word(offsetInBlock: Int, key: UInt8) -> UInt64 {
        (0x0706_0504_0302_0100 &+ UInt64(truncatingIfNeeded: offsetInBlock) &* 0x0101_0101_0101_0101)
            ^ (UInt64(key) &* 0x0101_0101_0101_0101)
    }

    /// Writes the pattern into `buffer`, whose first byte is at `startOffset` of the plane.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer, sequence: UInt32, plane: Int, startOffset: Int = 0) {
        guard let base = buffer.baseAddress else { return }
        fill(base, count: buffer.count, sequence: sequence, plane: plane, startOffset: startOffset)
    }

    /// Writes `count` pattern bytes at `base`, the first being the one at `startOffset` of the plane.
    public static func fill(_ base: UnsafeMutableRawPointer, count: Int, sequence: UInt32, plane: Int, startOffset: Int = 0) {
        var position = 0
        var offset = startOffset
        var block = offset >> 8
        var blockKey = key(sequence: sequence, plane: plane, block: block)
        while position < count {
            if offset >> 8 != block {
                block = offset >> 8
                blockKey = key(sequence: sequence, plane: plane, block: block)
            }
            if offset & 7 == 0 && count - position >= 8 {
                // Whole words up to the end of this 256-byte block.
                let blockEnd = (block + 1) << 8
                var words = min((blockEnd - offset) >> 3, (count - position) >> 3)
                while words > 0 {
                    base.storeBytes(of: word(offsetInBlock: offset & 0xff, key: blockKey).littleEndian,
                                    toByteOffset: position, as: UInt64.self)
                    position += 8
                    offset += 8
                    words -= 1
                }
            } else {
                base.storeBytes(of: UInt8(truncatingIfNeeded: offset) ^ blockKey, toByteOffset: position, as: UInt8.self)
                position += 1
                offset += 1
            }
        }
    }

    /// The index in `buffer` of the first byte that differs from the pattern, or nil when all match.
    public static func firstMismatch(in buffer: UnsafeRawBufferPointer, sequence: UInt32, plane: Int, startOffset: Int = 0) -> Int? {
        var block = -1
        var blockKey: UInt8 = 0
        for position in 0..<buffer.count {
            let offset = startOffset + position
            if offset >> 8 != block {
                block = offset >> 8
                blockKey = key(sequence: sequence, plane: plane, block: block)
            }
            if buffer[position] != UInt8(truncatingIfNeeded: offset) ^ blockKey { return position }
        }
        return nil
    }

    /// Whether every byte of `buffer` matches the pattern.
    public static func matches(_ buffer: UnsafeRawBufferPointer, sequence: UInt32, plane: Int, startOffset: Int = 0) -> Bool {
        firstMismatch(in: buffer, sequence: sequence, plane: plane, startOffset: startOffset) == nil
    }
}
