import CV4L2
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// The stream output of a capture: a file or standard output, written one frame at a time
/// with one writev(2) call per frame (one iovec per plane, preallocated; the call is repeated
/// only for short writes).
///
/// It counts the bytes of whole frames; when a write fails (ENOSPC, EIO, EFBIG, ...), a
/// regular file is truncated back to the last whole frame and the error names the path and
/// the errno. When writev fails with EFAULT (seen with some dmabuf mappings on 9p), the rest of
/// the stream is copied through one preallocated buffer instead.
public final class FrameOutput {
    /// The path given (`-` for standard output).
    public let path: String
    public let descriptor: Int32
    private let ownsDescriptor: Bool
    /// Whether the output is a regular file (which can be truncated back to whole frames).
    public let isRegularFile: Bool
    /// Where the stream starts in the file.
    private let startOffset: Int64
    /// Bytes of the stream header and of whole frames written.
    public private(set) var committedBytes = 0
    /// Whole frames written.
    public private(set) var framesCommitted = 0
    /// write/writev calls made, for checking the one-call-per-frame rule.
    public private(set) var writeCalls = 0
    /// Whether writes go through the copy buffer after writev returned EFAULT.
    public private(set) var usesCopyFallback = false
    /// A test hook: the next writev behaves as if it had failed with EFAULT.
    public var simulatesBadAddressOnce = false

    /// The most segments (iovecs) one frame may have.
    public static let maximumSegments = 16
    private let segments: UnsafeMutablePointer<iovec>
    private var segmentCount = 0
    private let copyBuffer: UnsafeMutableRawBufferPointer
    private var closed = false

    /// The name for messages: the path, or `standard output`.
    public var displayName: String { path == "-" ? "standard output" : path }

    init(descriptor: Int32, path: String, ownsDescriptor: Bool, frameCapacity: Int) {
        self.descriptor = descriptor
        self.path = path
        self.ownsDescriptor = ownsDescriptor
        var status = stat()
        isRegularFile = fstat(descriptor, &status) == 0 && (status.st_mode & S_IFMT) == S_IFREG
        let offset = isRegularFile ? lseek(descriptor, 0, SEEK_CUR) : 0
        startOffset = Int64(max(offset, 0))
        segments = UnsafeMutablePointer<iovec>.allocate(capacity: FrameOutput.maximumSegments)
        segments.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: FrameOutput.maximumSegments)
        copyBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(frameCapacity, 4096), alignment: 64)
    }

    deinit {
        if ownsDescriptor && !closed { Glibc.close(descriptor) }
        segments.deallocate()
        copyBuffer.deallocate()
    }

    /// Checks, before anything is captured, that `path` can be created or written.
    public static func checkWritable(path: String) throws(FrameDumpError) {
        if path == "-" { return }
        guard !path.isEmpty else { throw .usage("-o: the output path is empty") }
        var status = stat()
        if stat(path, &status) == 0 {
            if (status.st_mode & S_IFMT) == S_IFDIR {
                throw .usage("-o \(path): is a directory; name a file, or - for standard output")
            }
            if access(path, W_OK) != 0 {
                throw .usage("-o \(path): cannot write the file: \(Errno.current)")
            }
            return
        }
        let directory: String
        if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            directory = "."
        }
        var directoryStatus = stat()
        guard stat(directory, &directoryStatus) == 0 else {
            throw .usage("-o \(path): cannot create the file: directory \(directory): \(Errno.current)")
        }
        guard (directoryStatus.st_mode & S_IFMT) == S_IFDIR else {
            throw .usage("-o \(path): cannot create the file: \(directory) is not a directory (ENOTDIR)")
        }
        if access(directory, W_OK | X_OK) != 0 {
            throw .usage("-o \(path): cannot create the file in \(directory): \(Errno.current)")
        }
    }

    /// Creates (or truncates) the file at `path`.
    public static func create(path: String, frameCapacity: Int) throws(FrameDumpError) -> FrameOutput {
        let fd = cv4l2_open_mode(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw .runtime("-o \(path): cannot create the file: \(Errno.current)")
        }
        return FrameOutput(descriptor: fd, path: path, ownsDescriptor: true, frameCapacity: frameCapacity)
    }

    /// Writes to an open descriptor (standard output for `-o -`); it is not closed.
    public static func wrapping(descriptor: Int32, path: String = "-", frameCapacity: Int) -> FrameOutput {
        FrameOutput(descriptor: descriptor, path: path, ownsDescriptor: false, frameCapacity: frameCapacity)
    }

    // MARK: - Frames

    /// Starts a frame: no segments yet.
    @inline(__always)
    public func beginFrame() {
        segmentCount = 0
    }

    /// Adds `count` bytes at `base` to the frame.
    @inline(__always)
    public func append(_ base: UnsafeRawPointer?, count: Int) {
        guard count > 0, let base else { return }
        precondition(segmentCount < FrameOutput.maximumSegments, "a frame has more than \(FrameOutput.maximumSegments) segments")
        segments[segmentCount] = iovec(iov_base: UnsafeMutableRawPointer(mutating: base), iov_len: count)
        segmentCount += 1
    }

    /// Adds `buffer` to the frame.
    @inline(__always)
    public func append(_ buffer: UnsafeRawBufferPointer) {
        append(buffer.baseAddress, count: buffer.count)
    }

    /// Writes the frame's segments with one writev call (repeated only for short writes).
    public func commitFrame() throws(FrameDumpError) {
        var total = 0
        for i in 0..<segmentCount { total += segments[i].iov_len }
        try writeSegments(total: total)
        committedBytes += total
        framesCommitted += 1
    }

    /// Writes `bytes` (a stream header) and counts them as committed, not as a frame.
    public func writeHeader(_ bytes: UnsafeRawBufferPointer) throws(FrameDumpError) {
        segmentCount = 0
        append(bytes)
        try writeSegments(total: bytes.count)
        committedBytes += bytes.count
    }

    private func writeSegments(total: Int) throws(FrameDumpError) {
        var first = 0
        while first < segmentCount && segments[first].iov_len == 0 { first += 1 }
        while first < segmentCount {
            if usesCopyFallback {
                try copyAndWrite(from: first)
                return
            }
            var written = -1
            var errno = Errno.badAddress
            if simulatesBadAddressOnce {
                simulatesBadAddressOnce = false
            } else {
                written = writev(descriptor, segments + first, Int32(segmentCount - first))
                errno = Errno.current
            }
            writeCalls += 1
            if written < 0 {
                switch errno {
                case .interrupted: continue
                case .resourceTemporarilyUnavailable:
                    waitWritable()
                    continue
                case .badAddress:
                    usesCopyFallback = true
                    continue
                default:
                    throw failure(errno)
                }
            }
            var remaining = written
            while remaining > 0 && first < segmentCount {
                let length = segments[first].iov_len
                if remaining >= length {
                    remaining -= length
                    first += 1
                } else {
                    segments[first].iov_base = segments[first].iov_base.map { $0 + remaining }
                    segments[first].iov_len = length - remaining
                    remaining = 0
                }
            }
            while first < segmentCount && segments[first].iov_len == 0 { first += 1 }
        }
    }

    /// The EFAULT fall-back: copies the rest of the frame into the preallocated buffer and writes it.
    private func copyAndWrite(from first: Int) throws(FrameDumpError) {
        var size = 0
        for i in first..<segmentCount { size += segments[i].iov_len }
        guard size <= copyBuffer.count, let destination = copyBuffer.baseAddress else {
            throw failure(.badAddress, detail: "writev failed with EFAULT and the frame (\(size) bytes) is larger than the copy buffer (\(copyBuffer.count) bytes)")
        }
        var position = 0
        for i in first..<segmentCount {
            let segment = segments[i]
            if let base = segment.iov_base { (destination + position).copyMemory(from: base, byteCount: segment.iov_len) }
            position += segment.iov_len
        }
        var done = 0
        while done < size {
            let written = write(descriptor, destination + done, size - done)
            writeCalls += 1
            if written < 0 {
                let errno = Errno.current
                if errno == .interrupted { continue }
                if errno == .resourceTemporarilyUnavailable {
                    waitWritable()
                    continue
                }
                throw failure(errno)
            }
            done += written
        }
    }

    private func waitWritable() {
        var entry = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
        _ = poll(&entry, 1, 100)
    }

    /// A write failed: truncate a regular file back to the last whole frame and describe it.
    private func failure(_ errno: Errno, detail: String? = nil) -> FrameDumpError {
        var message = "\(displayName): write failed: \(errno)"
        if let detail { message += " (\(detail))" }
        if isRegularFile {
            let keep = startOffset + Int64(committedBytes)
            if ftruncate(descriptor, off_t(keep)) == 0 {
                _ = lseek(descriptor, off_t(keep), SEEK_SET)
                message += "; the file was truncated to the last whole frame: \(framesCommitted) frames, \(committedBytes) bytes"
            } else {
                message += "; truncating it to the last whole frame (\(committedBytes) bytes) failed too: \(Errno.current)"
            }
        } else {
            message += "; \(framesCommitted) whole frames (\(committedBytes) bytes) were written before it"
        }
        return .runtime(message)
    }

    /// Closes the file (standard output stays open). A failing close is reported.
    public func close() throws(FrameDumpError) {
        guard ownsDescriptor, !closed else { return }
        closed = true
        if Glibc.close(descriptor) != 0 {
            let errno = Errno.current
            if errno != .interrupted {
                throw .runtime("\(displayName): close failed: \(errno)")
            }
        }
    }
}
