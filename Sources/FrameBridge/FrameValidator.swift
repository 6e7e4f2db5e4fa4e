import V4L2

/// Checks what the driver says of a dequeued buffer before it becomes a frame: the plane
/// count, bytesused against the buffer's length, data_offset below bytesused, and for compressed
/// formats the frame's own defects (empty, overlong, JPEG markers). Pure: it reads the
/// descriptor and the frame's memory and answers; the pin counts and acts on the answer.
struct FrameValidator: Sendable {
    let validation: FrameValidation
    let errorFramePolicy: ErrorFramePolicy
    let corruptFramePolicy: CorruptFramePolicy

    enum Verdict {
        /// Deliver the frame (with its compressed defects, when the policy delivers them).
        case deliver(CompressedFrameDefects)
        /// Give it back to the driver (QBUF) undelivered: the policy skips its defects, or its error flag.
        case requeueCorrupt(CompressedFrameDefects)
        case requeueErrorFrame(CompressedFrameDefects)
        /// What the driver answered is impossible: counted, and the buffer is queued again.
        case violation(String)
    }

    /// The verdict on buffer `descriptor.index`, whose memory is `memory`. `cpuAccess` brackets
    /// the read of a JPEG's markers (a DMABUF allocator's sync calls); false when either failed.
    /// `descriptor` is inout to be passed by address; only a compressed frame's overlong or empty
    /// bytesused is changed (cut to the buffer, so that nothing past it is ever read).
    func verdict(_ descriptor: inout BufferDescriptor, memory: UnsafePointer<FrameMemory>,
                 cpuAccess: (_ begin: Bool) -> Bool, synchronizationFailed: inout Bool) -> Verdict {
        let index = descriptor.index
        let expectedPlanes = memory.pointee.planeCount
        guard descriptor.planeCount == expectedPlanes else {
            return .violation("buffer \(index) has \(descriptor.planeCount) planes, expected \(expectedPlanes)")
        }
        var defects: CompressedFrameDefects = []
        if validation != .uncompressed, descriptor.planeCount >= 1 {
            defects = compressedDefects(&descriptor, memory: memory, cpuAccess: cpuAccess, synchronizationFailed: &synchronizationFailed)
        }
        // A frame the driver flags as an error may carry nothing (uvcvideo's nodrop=1): that is
        // the error, not a violation, and the error-frame policy decides.
        let flaggedError = descriptor.flags.contains(.error)
        for plane in 0..<descriptor.planeCount {
            let p = descriptor.planes[plane]
            let length = min(max(Int(p.length), 0), memory.pointee.planes[plane].length)
            if Int(p.bytesUsed) > length {
                return .violation("buffer \(index) plane \(plane): bytesused \(p.bytesUsed) > length \(length)")
            } else if defects.contains(.empty) || (flaggedError && p.bytesUsed == 0 && p.dataOffset == 0) {
                // Nothing in it: a compressed frame's defect, or an error frame.
            } else if p.bytesUsed == 0 {
                return .violation("buffer \(index) plane \(plane): bytesused is 0")
            } else if p.dataOffset >= p.bytesUsed {
                return .violation("buffer \(index) plane \(plane): data_offset \(p.dataOffset) >= bytesused \(p.bytesUsed)")
            }
        }
        if !defects.isEmpty, corruptFramePolicy == .skip { return .requeueCorrupt(defects) }
        if flaggedError, errorFramePolicy == .skip { return .requeueErrorFrame(defects) }
        return .deliver(defects)
    }

    /// A compressed frame's defects. bytesused 0 and bytesused > length are defects rather than
    /// driver violations (a compressed frame's size varies, and cameras do send empty or overlong
    /// ones). For JPEG, the payload's SOI and EOI markers are checked.
    private func compressedDefects(_ descriptor: inout BufferDescriptor, memory: UnsafePointer<FrameMemory>,
                                   cpuAccess: (_ begin: Bool) -> Bool, synchronizationFailed: inout Bool) -> CompressedFrameDefects {
        let plane = descriptor.planes[0]
        let length = min(max(Int(plane.length), 0), memory.pointee.planes[0].length)
        if Int(plane.bytesUsed) > length {
            descriptor.planes[0].bytesUsed = UInt32(length)
            if plane.dataOffset >= UInt32(length) { descriptor.planes[0].dataOffset = 0 }
            return .bytesUsedOverLength
        }
        if plane.bytesUsed == 0 || plane.bytesUsed == plane.dataOffset {
            descriptor.planes[0].dataOffset = 0
            descriptor.planes[0].bytesUsed = 0
            return .empty
        }
        guard validation == .jpeg, plane.dataOffset < plane.bytesUsed, let base = memory.pointee.planes[0].address else { return [] }
        // A failed synchronization still checks the bytes (at worst stale in a CPU cache) and is counted.
        let began = cpuAccess(true)
        let defects = JPEGFrameCheck.defects(UnsafeRawBufferPointer(start: base + Int(plane.dataOffset),
                                                                    count: Int(plane.bytesUsed - plane.dataOffset)))
        if !began || !cpuAccess(false) { synchronizationFailed = true }
        return defects
    }
}

extension CaptureStatistics {
    /// Counts a compressed frame's defects (each kind once per frame).
    mutating func count(_ defects: CompressedFrameDefects, buffer index: Int, sequence: UInt32) {
        if defects.contains(.empty) { compressedEmpty += 1 }
        if defects.contains(.missingStartOfImage) { compressedMissingStartOfImage += 1 }
        if defects.contains(.truncated) { compressedTruncated += 1 }
        if defects.contains(.bytesUsedOverLength) { compressedBytesUsedOverLength += 1 }
        lastCorruption = "buffer \(index) (sequence \(sequence)): \(defects.names.joined(separator: ", "))"
    }
}
