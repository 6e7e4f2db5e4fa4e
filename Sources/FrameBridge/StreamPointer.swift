import V4L2

/// A reference to a captured frame (the AVStream stream pointer / clone analog).
///
/// Non-copyable: each value is exactly one reference, so a frame can be neither released
/// twice nor queued to the driver while referenced. ``clone()`` makes another reference.
/// When the last reference to a frame goes (the pointer is consumed or goes out of scope),
/// the frame returns to its allocator and is queued to the driver again (QBUF).
///
/// Frame data is reachable only while the pointer is locked (``lock()``, or
/// ``withLockedPayload(_:)-((FramePayload)->R)``). STREAMOFF, a fatal streaming error or a disconnect cancels
/// the frame: a later ``lock()`` fails with ``CaptureError/Kind/frameCancelled``, and the
/// ``onCancel(_:)`` handler of an unlocked pointer runs (a locked one's runs when it unlocks).
public struct StreamPointer: ~Copyable, @unchecked Sendable {
    let core: PinCore
    let slot: Int
    let generation: UInt32
    let id: UInt64
    /// The frame's metadata record, which this pointer holds (it outlives a cancellation).
    @usableFromInline let record: UnsafeMutablePointer<FrameRecord>
    private var memory: UnsafePointer<FrameMemory>?
    private var hasCancelHandler = false

    /// The frame's metadata, as dequeued (read in place: a pointer is a few words, whatever
    /// the number of planes).
    @inlinable public var info: FrameInfo { FrameRecord.info(record).pointee }

    /// Takes over one holder of `record`, counted by the caller.
    init(core: PinCore, slot: Int, generation: UInt32, id: UInt64, record: UnsafeMutablePointer<FrameRecord>) {
        self.core = core
        self.slot = slot
        self.generation = generation
        self.id = id
        self.record = record
    }

    deinit {
        if memory != nil { core.unlock(slot: slot, generation: generation, pointer: id, hasHandler: hasCancelHandler) }
        core.release(slot: slot, generation: generation, pointer: id, record: record)
    }

    /// Another reference to the same frame (KsStreamPointerClone). Cloning a cancelled
    /// frame gives a pointer that is cancelled too.
    public func clone() -> StreamPointer {
        let id = core.clone(slot: slot, generation: generation, record: record)
        return StreamPointer(core: core, slot: slot, generation: generation, id: id, record: record)
    }

    /// Whether the frame is still valid (not cancelled).
    public var isValid: Bool { core.isValid(slot: slot, generation: generation) }

    /// Whether the pointer is locked.
    public var isLocked: Bool { memory != nil }

    /// Locks the frame so its data can be read (KsStreamPointerLock).
    ///
    /// - Throws: ``CaptureError/Kind/frameCancelled`` when the frame was cancelled.
    public mutating func lock() throws(CaptureError) {
        if memory != nil { return }
        memory = try core.lock(slot: slot, generation: generation, pointer: id, hasHandler: hasCancelHandler)
    }

    /// Unlocks the frame (KsStreamPointerUnlock). Its data is no longer reachable.
    public mutating func unlock() {
        guard memory != nil else { return }
        memory = nil
        core.unlock(slot: slot, generation: generation, pointer: id, hasHandler: hasCancelHandler)
    }

    /// Runs `body` with the frame's bytes. The pointer must be locked (``lock()``): calling it
    /// unlocked is a programmer error and traps.
    public func withPayload<R, E: Error>(_ body: (borrowing FramePayload) throws(E) -> R) throws(E) -> R {
        guard let memory else {
            preconditionFailure("frame \(info.sequence): its data is reachable only while the stream pointer is locked; call lock() first")
        }
        return try body(FramePayload(record: UnsafePointer(FrameRecord.info(record)), memory: memory))
    }

    /// Locks, runs `body` (which cannot throw) with the frame's bytes, and unlocks (a pointer
    /// that was locked already stays locked).
    ///
    /// - Throws: ``CaptureError/Kind/frameCancelled`` when the frame was cancelled.
    public mutating func withLockedPayload<R>(_ body: (borrowing FramePayload) -> R) throws(CaptureError) -> R {
        let wasLocked = isLocked
        try lock()
        defer { if !wasLocked { unlock() } }
        return withPayload(body)
    }

    /// Locks, runs `body` with the frame's bytes, and unlocks (a pointer that was locked
    /// already stays locked).
    ///
    /// - Throws: ``LockedPayloadError/lock(_:)`` with ``CaptureError/Kind/frameCancelled``
    ///   when the frame was cancelled, or ``LockedPayloadError/body(_:)`` with `body`'s error.
    public mutating func withLockedPayload<R, E: Error>(_ body: (borrowing FramePayload) throws(E) -> R) throws(LockedPayloadError<E>) -> R {
        let wasLocked = isLocked
        do {
            try lock()
        } catch {
            throw .lock(error)
        }
        defer { if !wasLocked { unlock() } }
        do {
            return try withPayload(body)
        } catch {
            throw .body(error)
        }
    }

    /// Registers a handler that runs once if the frame is cancelled while this pointer holds
    /// it (STREAMOFF, a fatal error, a disconnect, or the cancel-oldest starvation policy).
    public mutating func onCancel(_ handler: @escaping @Sendable () -> Void) {
        hasCancelHandler = true
        core.addCancelHandler(slot: slot, generation: generation, pointer: id, locked: isLocked, handler: handler)
    }

    /// Releases this reference now (KsStreamPointerDelete).
    public consuming func release() {}
}
