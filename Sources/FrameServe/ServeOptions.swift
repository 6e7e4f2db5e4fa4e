import FrameBridge
import FrameDump
import V4L2

/// What `framedump serve` is asked to do.
public struct ServeOptions: Sendable {
    /// One camera: its device and the capture options people know from `framedump capture`.
    public struct Camera: Sendable {
        public var path: String
        public var format: FormatOptions
        public var memory: MemoryKind
        public var dmabufSource: DMABufSource?
        public var buffers: Int?
        public var backend: any DeviceBackend

        public init(path: String, format: FormatOptions, memory: MemoryKind = .mmap, dmabufSource: DMABufSource? = nil,
                    buffers: Int? = nil, backend: any DeviceBackend = KernelBackend.shared) {
            self.path = path
            self.format = format
            self.memory = memory
            self.dmabufSource = dmabufSource
            self.buffers = buffers
            self.backend = backend
        }
    }

    public var cameras: [Camera]
    /// Where to listen; loopback unless told otherwise.
    public var host = "127.0.0.1"
    public var port = 8080
    /// JPEG quality of encoded frames (1...100).
    public var quality = 80
    /// Identical pictures skipped in a row at most (0: send every picture).
    public var dropSameFrames = 0
    /// Connections served at once; beyond, 503.
    public var maxClients = 64
    /// Stream only while someone watches: stop this long after the last viewer leaves.
    public var idleStopSeconds: Double?
    /// After an unplug, wait for the device to come back (for at most `reconnectTimeoutSeconds`).
    public var reconnect = true
    public var reconnectTimeoutSeconds: Double?
    /// How long a camera may have no signal before the server gives up (nil: forever).
    public var waitForSignalSeconds: Double?
    /// `user:password` lines for HTTP Basic authentication; empty: none.
    public var credentials: [String] = []
    /// A request's head must arrive within this many seconds (slowloris), and be at most this big.
    public var requestTimeoutSeconds = 10.0
    public var maxHeaderBytes = 8192

    public init(cameras: [Camera]) {
        self.cameras = cameras
    }
}
