import V4L2

/// What the consumer of a pin's frames needs from their memory.
public struct ConsumerRequirements: Hashable, Sendable, Codable {
    /// The consumer reads frames with the CPU, so their memory must be mappable.
    public var needsCPUAccess: Bool
    /// The consumer can take device memory (dmabufs), the kernel-mode connection analog.
    public var acceptsDeviceMemory: Bool

    public init(needsCPUAccess: Bool = true, acceptsDeviceMemory: Bool = false) {
        self.needsCPUAccess = needsCPUAccess
        self.acceptsDeviceMemory = acceptsDeviceMemory
    }
}

/// Why a candidate allocator was not chosen.
public struct AllocatorRejection: Hashable, Sendable, Codable, CustomStringConvertible {
    public var allocator: String
    public var reason: String
    public var description: String { "\(allocator): \(reason)" }
}

/// The outcome of allocator selection.
public struct AllocatorSelectionResult: Sendable {
    /// The chosen allocator (not yet initialized: the pin initializes it when it starts).
    public var chosen: any AllocatorDispatch
    /// The number of frames to ask it for.
    public var frameCount: Int
    /// Whether the chosen allocator is the default one, taken because no candidate fit.
    public var fellBackToDefault: Bool
    /// Every rejected candidate with its reason, in the order they were checked.
    public var rejections: [AllocatorRejection]
}

/// Chooses an allocator the way AVStream's graph manager does: candidates in preference
/// order, each checked against the pin's framing and the consumer's requirements; a
/// rejected candidate is never initialized, and its reason is recorded; when none fits,
/// the default allocator (``KernelPoolAllocator``) is taken.
public struct AllocatorSelection: Sendable {
    public var candidates: [any AllocatorDispatch]
    public var consumer: ConsumerRequirements
    /// The number of frames wanted; clamped to the framing's range.
    public var frameCount: Int?
    /// The allocator to fall back to.
    public var fallback: @Sendable () -> any AllocatorDispatch

    public init(candidates: [any AllocatorDispatch] = [], consumer: ConsumerRequirements = ConsumerRequirements(),
                frameCount: Int? = nil, fallback: @escaping @Sendable () -> any AllocatorDispatch = { KernelPoolAllocator() }) {
        self.candidates = candidates
        self.consumer = consumer
        self.frameCount = frameCount
        self.fallback = fallback
    }

    /// The frame count to use for `framing`: the wanted count (default 4 more than the
    /// driver's minimum, at least 4) clamped to the framing's range.
    public func resolvedFrameCount(for framing: AllocatorFraming) -> Int {
        let wanted = frameCount ?? max(4, framing.framesMinimum + 2)
        return min(max(wanted, framing.framesMinimum), framing.framesMaximum)
    }

    /// Why `allocator` does not fit `framing`, or nil when it does.
    public func rejectionReason(_ allocator: any AllocatorDispatch, framing: AllocatorFraming) -> String? {
        let offer = allocator.offer
        let kind = offer.memoryKind
        if !framing.memoryKinds.contains(kind) {
            let supported = framing.memoryKinds.map(\.description).joined(separator: ", ")
            return "memory kind \(kind) is not supported by \(framing.device) (it supports \(supported.isEmpty ? "none" : supported))"
        }
        if consumer.needsCPUAccess && !offer.cpuAccessible {
            return "the consumer reads frames with the CPU but this allocator's memory cannot be mapped"
        }
        if offer.deviceMemory && !consumer.acceptsDeviceMemory {
            return "device memory (\(kind)) is chosen only for a consumer that accepts device memory; this consumer does not"
        }
        if let sizes = offer.planeSizes {
            if sizes.count < framing.countItems {
                return "it provides \(sizes.count) plane(s) but the format has \(framing.countItems)"
            }
            // Against the upper bound of the frame size range: a compressed frame is 0...sizeimage
            // bytes, and the buffer must hold the largest one the driver may write.
            for (plane, item) in framing.items.enumerated() where sizes[plane] < item.bufferSize {
                if item.frameSizeMinimum < item.frameSizeMaximum {
                    return "frame size \(sizes[plane]) bytes is below the largest compressed frame, \(item.bufferSize) bytes (frame sizes \(item.frameSizeMinimum)...\(item.frameSizeMaximum), sizeimage of plane \(plane))"
                }
                return "frame size \(sizes[plane]) bytes is below the minimum \(item.bufferSize) (sizeimage of plane \(plane))"
            }
        }
        let alignment = framing.items.map(\.alignment).max() ?? 1
        if kind != .mmap, alignment > 1, offer.alignment % alignment != 0 {
            return "alignment \(offer.alignment) is not a multiple of the required \(alignment)"
        }
        let count = resolvedFrameCount(for: framing)
        if let wanted = frameCount, wanted < framing.framesMinimum || wanted > framing.framesMaximum {
            return "frame count \(wanted) is outside the range \(framing.framesMinimum)...\(framing.framesMaximum)"
        }
        if let maximum = offer.framesMaximum, maximum < max(count, framing.framesMinimum) {
            return "it provides at most \(maximum) frames but \(max(count, framing.framesMinimum)) are needed"
        }
        return nil
    }

    /// Checks the candidates in order against `framing` and returns the first that fits, or
    /// the fallback, with every rejection and its reason. Initializes nothing.
    public func select(framing: AllocatorFraming) -> AllocatorSelectionResult {
        var rejections: [AllocatorRejection] = []
        let count = resolvedFrameCount(for: framing)
        for candidate in candidates {
            if let reason = rejectionReason(candidate, framing: framing) {
                rejections.append(AllocatorRejection(allocator: candidate.name, reason: reason))
            } else {
                return AllocatorSelectionResult(chosen: candidate, frameCount: count, fellBackToDefault: false, rejections: rejections)
            }
        }
        return AllocatorSelectionResult(chosen: fallback(), frameCount: count, fellBackToDefault: !candidates.isEmpty,
                                        rejections: rejections)
    }
}
