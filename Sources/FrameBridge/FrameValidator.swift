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
        case violation(Violation)
    }

    /// An impossible answer, worded only when it is recorded (the verdict stays a plain value).
    enum Violation: CustomStringConvertible {
        case planeCount(buffer: UInt32, got: Int, expected: Int)
        case bytesUsedOverLength(buffer: UInt32, plane: Int, bytesUsed: UInt32, length: Int)
        case bytesUsedZero(buffer: UInt32, plane: Int)
        case dataOffset(buffer: UInt32, plane: Int, dataOffset: UInt32, bytesUsed: UInt32)

        var description: String {
            switch self {
            case .planeCount(let buffer, let got, let expected): return "buffer \(buffer) has \(got) planes, expected \(expected)"
            case .bytesUsedOverLength(let buffer, let plane, let bytesUsed, let length): return "buffer \(buffer) plane \(plane): bytesused \(bytesUsed) > length \(length)"
            case .bytesUsedZero(let buffer, let plane): return "buffer \(buffer) plane \(plane): bytesused is 0"
            case .dataOffset(let buffer, let plane, let dataOffset, let bytesUsed): return "buffer \(buffer) plane \(plane): data_offset \(dataOffset) >= bytesused \(bytesUsed)"
            }
        }
    }

    /// The verdict on buffer `descriptor.index`, whose memory is `memory`. `synchronize`'s CPU
    /// access calls bracket the read of a JPEG's markers (a DMABUF allocator); a failure is counted.
    /// `descriptor` is inout to be passed by address; only a compressed frame's overlong or empty
    /// bytesused is changed (cut to the buffer, so that nothing past it is ever read).
    @inline(__always)
    func verdict(_ descriptor: inout BufferDescriptor, memory: UnsafePointer<FrameMemory>,
                 synchronize: (any AllocatorDispatch)?, synchronizationFailed: inout Bool) -> Verdict {
        let index = descriptor.index
        let expectedPlanes = memory.pointee.planeCount
        guard descriptor.planeCount == expectedPlanes else {
            return .violation(.planeCount(buffer: index, got: descriptor.planeCount, expected: expectedPlanes))
        }
        var defects: CompressedFrameDefects = []
        if validation != .uncompressed, descriptor.planeCount >= 1 {
            defects = compressedDefects(&descriptor, memory: memory, synchronize: synchronize, synchronizationFailed: &synchronizationFailed)
        }
        // A frame the driver flags as an error may carry nothing (uvcvideo's nodrop=1): that is
        // the error, not a violation, and the error-frame policy decides.
        let flaggedError = descriptor.flags.contains(.error)
        for plane in 0..<descriptor.planeCount {
            let p = descriptor.planes[plane]
            let length = min(max(Int(p.length), 0), memory.pointee.planes[plane].length)
            if Int(p.bytesUsed) > length {
                return .violation(.bytesUsedOverLength(buffer: index, plane: plane, bytesUsed: p.bytesUsed, length: length))
            } else if defects.contains(.empty) || (flaggedError && p.bytesUsed == 0 && p.dataOffset == 0) {
                // Nothing in it: a compressed frame's defect, or an error frame.
            } else if p.bytesUsed == 0 {
                return .violation(.bytesUsedZero(buffer: index, plane: plane))
            } else if p.dataOffset >= p.bytesUsed {
                return .violation(.dataOffset(buffer: index, plane: plane, dataOffset: p.dataOffset, bytesUsed: p.bytesUsed))
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
                                   synchronize: (any AllocatorDispatch)?, synchronizationFailed: inout Bool) -> CompressedFrameDefects {
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
        let index = Int(descriptor.index)
        var synchronized = true
        do throws(CaptureError) { try synchronize?.beginCPUAccess(index: index, memory: memory.pointee) } catch { synchronized = false }
        let defects = JPEGFrameCheck.defects(UnsafeRawBufferPointer(start: base + Int(plane.dataOffset),
                                                                    count: Int(plane.bytesUsed - plane.dataOffset)))
        if synchronized {
            do throws(CaptureError) { try synchronize?.endCPUAccess(index: index, memory: memory.pointee) } catch { synchronized = false }
        }
        if !synchronized { synchronizationFailed = true }
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
