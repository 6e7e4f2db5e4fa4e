import SystemPackage
import CV4L2
import CFrameDump
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// `--direct-io auto|on|off`: whether raw frames are written with O_DIRECT, straight from the
/// capture buffer (the kernel hands the buffer's pages to the disk: no copy into the page cache).
public enum DirectIOMode: String, Hashable, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// O_DIRECT when the output is a regular file on a file system that accepts it (the default).
    case auto
    /// Like `auto`, but a file (or file system) that refuses O_DIRECT is an error.
    case on
    /// Always through the page cache.
    case off

    public var description: String { rawValue }
}

/// Whether a ``FrameOutput`` writes with O_DIRECT, and why not when it does not.
public enum DirectIOStatus: Hashable, Sendable, CustomStringConvertible {
    /// Frames whose segments meet the alignment go direct. `reported` says whether the alignment
    /// came from statx(STATX_DIOALIGN) or is the conservative default (4096).
    case active(memoryAlignment: Int, offsetAlignment: Int, reported: Bool)
    /// Every frame goes through the page cache, for the reason given.
    case inactive(String)

    public var isActive: Bool {
        if case .active = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case let .active(memory, offset, reported):
            return "O_DIRECT for aligned frames: memory alignment \(memory), offset alignment \(offset)"
                + (reported ? " (statx STATX_DIOALIGN)" : " (assumed: statx reports none)")
        case let .inactive(reason):
            return "not used: \(reason)"
        }
    }
}

/// The stream output of a capture: a file or standard output, written one frame at a time
/// with one writev(2) call per frame (one iovec per plane, preallocated; the call is repeated
/// only for short writes).
///
/// Direct I/O (``DirectIOMode``): on a regular file whose file system accepts O_DIRECT
/// (fcntl(F_SETFL, O_DIRECT) succeeds), a frame whose segments all start at an address aligned
/// to the file's direct-I/O memory alignment, whose segment lengths and file offset are multiples
/// of its offset alignment (statx STATX_DIOALIGN; 4096 when not reported) is written with
/// O_DIRECT, from the capture buffer itself. Any other frame (unaligned data_offset, a length that
/// is not a whole number of blocks, or a file offset left unaligned by such a frame) is written
/// through the page cache: the flag is toggled with fcntl(F_SETFL) only when it changes, and
/// still one writev per frame. A direct writev failing with EINVAL (the file system refused the write) or EFAULT (memory the
/// kernel cannot pin, such as a PFN-mapped device buffer) is repeated through the page cache, and
/// the rest of the stream stays there. Standard output never goes direct.
///
/// It counts the bytes of whole frames; when a write fails (ENOSPC, EIO, EFBIG, ...), a
/// regular file is truncated back to the last whole frame and the error names the path and
/// the errno. When a buffered writev fails with EFAULT (seen with some dmabuf mappings on 9p),
/// the rest of the stream is copied through one preallocated buffer instead.
public final class FrameOutput {
    /// The path given (`-` for standard output).
    public let path: String
    /// The output's descriptor: owned (closed exactly once, by ``close()`` or deinit) for a file
    /// this object created, borrowed for standard output.
    public let fileDescriptor: FileDescriptor
    /// The descriptor's number, for the write calls.
    public var descriptor: Int32 { fileDescriptor.rawValue }
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

    /// Whether frames may go direct (O_DIRECT), and why not.
    public private(set) var directIO: DirectIOStatus = .inactive("off")
    /// Whole frames written entirely with O_DIRECT.
    public private(set) var framesDirect = 0
    /// Whole frames written (at least partly) through the page cache.
    public var framesBuffered: Int { framesCommitted - framesDirect }
    /// A test hook: the next fcntl(F_SETFL, O_DIRECT) fails as on a file system without direct I/O.
    public var simulatesDirectIORefusal = false
    /// A test hook: the next direct writev behaves as if the file system had refused it (EINVAL).
    public var simulatesDirectWriteRefusalOnce = false
    /// The descriptor's status flags without O_DIRECT (fcntl F_GETFL).
    private var statusFlags: Int32 = 0
    /// Whether O_DIRECT is set on the descriptor now.
    private var directFlagSet = false
    private static let directFlag = cframedump_o_direct()

    /// The most segments (iovecs) one frame may have.
    public static let maximumSegments = 16
    private let segments: UnsafeMutablePointer<iovec>
    private var segmentCount = 0
    private let copyBuffer: UnsafeMutableRawBufferPointer
    private var closed = false

    /// The name for messages: the path, or `standard output`.
    public var displayName: String { path == "-" ? "standard output" : path }

    init(descriptor: FileDescriptor, path: String, ownsDescriptor: Bool, frameCapacity: Int) {
        self.fileDescriptor = descriptor
        let descriptor = descriptor.rawValue
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
        if ownsDescriptor && !closed { try? fileDescriptor.close() }
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

    /// Creates (or truncates) the file at `path` and sets up direct I/O as `directIO` asks
    /// (``enableDirectIO(_:)``).
    ///
    /// - Throws: a runtime error naming the path and the errno when the file cannot be opened or
    ///   truncated; with `directIO: .on`, the usage error of ``enableDirectIO(_:)``, and the file is
    ///   left as it was (removed if this call created it).
    public static func create(path: String, frameCapacity: Int, directIO: DirectIOMode = .auto) throws(FrameDumpError) -> FrameOutput {
        try create(path: path, frameCapacity: frameCapacity, directIO: directIO, truncate: { ftruncate($0, 0) })
    }

    /// `truncate` is ftruncate(fd, 0), replaceable so that tests can make it fail.
    static func create(path: String, frameCapacity: Int, directIO: DirectIOMode,
                       truncate: (Int32) -> Int32) throws(FrameDumpError) -> FrameOutput {
        var existing = stat()
        let existed = stat(path, &existing) == 0
        // Not O_TRUNC: a file that --direct-io on rejects is left untouched.
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .closeOnExec],
                                         permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw .runtime("-o \(path): cannot create the file: \(error as? Errno ?? .current)")
        }
        let output = FrameOutput(descriptor: fd, path: path, ownsDescriptor: true, frameCapacity: frameCapacity)
        do throws(FrameDumpError) {
            try output.enableDirectIO(directIO)
        } catch {
            try? output.close()
            if !existed { unlink(path) }
            throw error
        }
        if output.isRegularFile && truncate(fd.rawValue) != 0 {
            let errno = Errno.current
            try? output.close()
            if !existed { unlink(path) }
            throw .runtime("-o \(path): cannot truncate the file: ftruncate failed: \(errno)")
        }
        return output
    }

    /// Writes to an open descriptor (standard output for `-o -`); it is not closed.
    public static func wrapping(descriptor: Int32, path: String = "-", frameCapacity: Int) -> FrameOutput {
        FrameOutput(descriptor: FileDescriptor(rawValue: descriptor), path: path, ownsDescriptor: false, frameCapacity: frameCapacity)
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
        let direct = try writeSegments()
        committedBytes += total
        framesCommitted += 1
        if direct { framesDirect += 1 }
    }

    /// Writes `bytes` (a stream header) and counts them as committed, not as a frame.
    public func writeHeader(_ bytes: UnsafeRawBufferPointer) throws(FrameDumpError) {
        segmentCount = 0
        append(bytes)
        _ = try writeSegments()
        committedBytes += bytes.count
    }

    /// Writes the segments, with O_DIRECT when they and the file offset are aligned for it.
    /// Returns whether every byte went direct.
    private func writeSegments() throws(FrameDumpError) -> Bool {
        var first = 0
        while first < segmentCount && segments[first].iov_len == 0 { first += 1 }
        var position = startOffset + Int64(committedBytes)
        var wentDirect = false
        var wentBuffered = false
        while first < segmentCount {
            if usesCopyFallback {
                try copyAndWrite(from: first)
                return false
            }
            let direct = alignedForDirectIO(from: first, position: position)
            if direct != directFlagSet {
                // A failure to set the flag turns direct I/O off; the frame is then written buffered.
                if try !setDirectFlag(direct) { continue }
            }
            var written = -1
            var errno = Errno.badAddress
            if simulatesBadAddressOnce {
                simulatesBadAddressOnce = false
            } else if direct && simulatesDirectWriteRefusalOnce {
                simulatesDirectWriteRefusalOnce = false
                errno = .invalidArgument
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
                case .badAddress where direct:
                    // Memory the kernel cannot pin for I/O (a PFN-mapped device buffer): copy it
                    // through the page cache from now on.
                    try stopDirectIO("a writev with O_DIRECT failed with \(errno) after \(framesCommitted) frames; the rest went through the page cache")
                    continue
                case .invalidArgument where direct:
                    try stopDirectIO("the file system refused a writev with O_DIRECT (\(errno)) after \(framesCommitted) frames; the rest went through the page cache")
                    continue
                case .badAddress:
                    usesCopyFallback = true
                    continue
                default:
                    throw failure(errno)
                }
            }
            if direct { wentDirect = true } else { wentBuffered = true }
            position += Int64(written)
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
        return wentDirect && !wentBuffered
    }

    // MARK: - Direct I/O

    /// Sets up direct I/O for the frames to come; call it before the first write. With `.auto`
    /// or `.on`, on a regular file this program opened: fcntl(F_GETFL), fcntl(F_SETFL, O_DIRECT),
    /// then statx(STATX_DIOALIGN) for the alignment (4096 when not reported). ``directIO`` says
    /// the outcome.
    ///
    /// - Throws: with `.on`, a usage error naming the path and the reason when the output cannot
    ///   go direct: standard output, not a regular file, or a file system that refuses O_DIRECT
    ///   (the errno of fcntl) or reports no direct-I/O alignment.
    public func enableDirectIO(_ mode: DirectIOMode) throws(FrameDumpError) {
        if directFlagSet { try setDirectFlag(false) }
        directIO = probeDirectIO(mode)
        if mode == .on, case .inactive(let reason) = directIO {
            throw .usage("-o \(path): --direct-io on: \(reason)")
        }
    }

    private func probeDirectIO(_ mode: DirectIOMode) -> DirectIOStatus {
        if mode == .off { return .inactive("off (--direct-io off)") }
        guard ownsDescriptor else { return .inactive("\(displayName) is written through the page cache") }
        guard isRegularFile else { return .inactive("\(path) is not a regular file") }
        let flags = fcntl(descriptor, F_GETFL)
        guard flags >= 0 else { return .inactive("fcntl(F_GETFL) failed: \(Errno.current)") }
        statusFlags = flags & ~FrameOutput.directFlag
        if simulatesDirectIORefusal {
            simulatesDirectIORefusal = false
            return .inactive("the file system refuses O_DIRECT: fcntl(F_SETFL, O_DIRECT) failed: \(Errno.invalidArgument)")
        }
        guard fcntl(descriptor, F_SETFL, statusFlags | FrameOutput.directFlag) == 0 else {
            return .inactive("the file system refuses O_DIRECT: fcntl(F_SETFL, O_DIRECT) failed: \(Errno.current)")
        }
        directFlagSet = true
        var memory: UInt32 = 0
        var offset: UInt32 = 0
        guard cframedump_statx_dio_alignment(descriptor, &memory, &offset) == 0 else {
            return .active(memoryAlignment: 4096, offsetAlignment: 4096, reported: false)
        }
        guard memory > 0, offset > 0 else {
            if fcntl(descriptor, F_SETFL, statusFlags) == 0 { directFlagSet = false }
            return .inactive("the file system does no direct I/O on this file (statx STATX_DIOALIGN reports alignment 0)")
        }
        return .active(memoryAlignment: Int(memory), offsetAlignment: Int(offset), reported: true)
    }

    /// Whether segments[first...] and the file offset `position` are aligned for O_DIRECT.
    @inline(__always)
    private func alignedForDirectIO(from first: Int, position: Int64) -> Bool {
        guard case let .active(memory, offset, _) = directIO, position % Int64(offset) == 0 else { return false }
        for i in first..<segmentCount {
            let segment = segments[i]
            guard let base = segment.iov_base, UInt(bitPattern: base) % UInt(memory) == 0, segment.iov_len % offset == 0 else {
                return false
            }
        }
        return true
    }

    /// fcntl(F_SETFL) with or without O_DIRECT. Returns false, with direct I/O turned off for the
    /// rest of the stream, when setting it fails.
    ///
    /// - Throws: when clearing it fails (the buffered writes to come would all fail).
    @discardableResult
    private func setDirectFlag(_ on: Bool) throws(FrameDumpError) -> Bool {
        if fcntl(descriptor, F_SETFL, on ? statusFlags | FrameOutput.directFlag : statusFlags) == 0 {
            directFlagSet = on
            return true
        }
        let errno = Errno.current
        guard on else { throw failure(errno, detail: "fcntl(F_SETFL) failed to clear O_DIRECT") }
        directIO = .inactive("fcntl(F_SETFL, O_DIRECT) failed after \(framesCommitted) frames: \(errno); the rest went through the page cache")
        return false
    }

    /// Turns direct I/O off for the rest of the stream.
    private func stopDirectIO(_ reason: String) throws(FrameDumpError) {
        if directFlagSet { try setDirectFlag(false) }
        if directIO.isActive { directIO = .inactive(reason) }
    }

    /// The EFAULT fall-back: copies the rest of the frame into the preallocated buffer and writes it.
    private func copyAndWrite(from first: Int) throws(FrameDumpError) {
        try stopDirectIO("writev failed with EFAULT after \(framesCommitted) frames; the rest was copied through one buffer")
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
        do {
            try fileDescriptor.close()
        } catch {
            // EINTR: the descriptor is closed all the same (Linux); retrying could close another's.
            let errno = error as? Errno ?? .current
            if errno != .interrupted {
                throw .runtime("\(displayName): close failed: \(errno)")
            }
        }
    }
}
