import CV4L2

/// The flags of DMA_BUF_IOCTL_SYNC.
public struct DMABufSyncFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let read = DMABufSyncFlags(rawValue: UInt64(CV4L2_DMA_BUF_SYNC_READ))
    public static let write = DMABufSyncFlags(rawValue: UInt64(CV4L2_DMA_BUF_SYNC_WRITE))
    /// START is 0 in the uAPI: a sync without ``end`` begins CPU access.
    public static let start = DMABufSyncFlags(rawValue: UInt64(CV4L2_DMA_BUF_SYNC_START))
    public static let end = DMABufSyncFlags(rawValue: UInt64(CV4L2_DMA_BUF_SYNC_END))
}

extension DeviceBackend {
    /// DMA_BUF_IOCTL_SYNC on `descriptor`, a dmabuf, restarting on EINTR and EAGAIN as the
    /// dma-buf documentation asks (EAGAIN at most `retries` times, so a stuck fence cannot spin).
    public func synchronizeDMABuf(_ descriptor: Int32, _ flags: DMABufSyncFlags, retries: Int = 1000) throws(V4L2Error) {
        var request = dma_buf_sync(flags: flags.rawValue)
        var again = 0
        while true {
            guard let errno = ioctl(descriptor, request: CV4L2_DMA_BUF_IOCTL_SYNC, argument: &request) else { return }
            if errno == .interrupted { continue }
            if errno == .resourceTemporarilyUnavailable && again < retries {
                again += 1
                continue
            }
            let which = flags.contains(.end) ? "end" : "start"
            throw V4L2Error(device: "dmabuf fd \(descriptor)", operation: "DMA_BUF_IOCTL_SYNC", errno: errno,
                            detail: "the CPU access \(which) of a frame could not be synchronized with the device")
        }
    }
}
