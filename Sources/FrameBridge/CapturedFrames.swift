import V4L2

/// A captured frame handed out by ``CapturedFrames``: a class wrapper around a
/// ``StreamPointer``, so it can travel through an `AsyncSequence`. The frame goes back to
/// the driver when the last `CapturedFrame` referencing it is gone (or on ``release()``).
///
/// Unlike ``CapturePin/next(timeoutMilliseconds:)``, each element is one small heap object;
/// use the pointer API on the hot path when every allocation counts.
public final class CapturedFrame: @unchecked Sendable {
    private var pointer: StreamPointer?
    /// The frame's metadata.
    public let info: FrameInfo

    init(_ pointer: consuming StreamPointer) {
        info = pointer.info
        self.pointer = Optional(pointer)
    }

    /// Locks the frame, runs `body` with its bytes, and unlocks.
    ///
    /// - Throws: ``CaptureError/Kind/frameCancelled`` when the frame was cancelled or released.
    public func withLockedPayload<R>(_ body: (FramePayload) throws -> R) throws -> R {
        guard pointer != nil else {
            throw CaptureError(.frameCancelled, "frame \(info.sequence) was released")
        }
        return try pointer!.withLockedPayload(body)
    }

    /// Gives the frame back now.
    public func release() {
        pointer = nil
    }
}

/// The frames of a started pin as an `AsyncSequence`. Iteration polls the device in short
/// slices so that task cancellation is noticed; when the task is cancelled, the pin stops
/// streaming (STREAMOFF) and the sequence ends cleanly. A fatal error ends it by throwing.
public struct CapturedFrames: AsyncSequence, Sendable {
    public typealias Element = CapturedFrame
    let pin: CapturePin
    let limit: Int?

    public struct AsyncIterator: AsyncIteratorProtocol {
        let pin: CapturePin
        let limit: Int?
        var produced = 0

        public mutating func next() async throws -> CapturedFrame? {
            if let limit, produced >= limit { return nil }
            while true {
                if Task.isCancelled {
                    pin.stop()
                    return nil
                }
                if try pin.advance(timeoutMilliseconds: 50), let pointer = pin.cloneLeadingEdge() {
                    produced += 1
                    return CapturedFrame(pointer)
                }
                await Task.yield()
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(pin: pin, limit: limit)
    }
}

extension CapturePin {
    /// The pin's frames as an `AsyncSequence` (the pin must be started); `limit` ends it after
    /// that many frames.
    public func frames(limit: Int? = nil) -> CapturedFrames {
        CapturedFrames(pin: self, limit: limit)
    }
}
