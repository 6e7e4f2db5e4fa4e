import SystemPackage
import FrameBridge
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// Checks, before anything is captured, that a directory option names a directory that can be
/// written into, or one that can be created. Errors name `option`.
enum OutputDirectory {
    static func check(_ directory: String, option: String) throws(FrameDumpError) {
        guard !directory.isEmpty else { throw .usage("\(option): the directory path is empty") }
        var status = stat()
        if stat(directory, &status) == 0 {
            guard (status.st_mode & S_IFMT) == S_IFDIR else { throw .usage("\(option) \(directory): not a directory") }
            if access(directory, W_OK | X_OK) != 0 {
                throw .usage("\(option) \(directory): cannot write into it: \(Errno.current)")
            }
            return
        }
        let trimmed = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let parent: String
        if let slash = trimmed.lastIndex(of: "/") {
            parent = slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
        } else {
            parent = "."
        }
        var parentStatus = stat()
        guard stat(parent, &parentStatus) == 0, (parentStatus.st_mode & S_IFMT) == S_IFDIR else {
            throw .usage("\(option) \(directory): cannot create it: its parent \(parent) is not a directory: \(Errno.current)")
        }
        if access(parent, W_OK | X_OK) != 0 {
            throw .usage("\(option) \(directory): cannot create it in \(parent): \(Errno.current)")
        }
    }

    /// Makes the directory if it does not exist (after streaming started).
    static func create(_ directory: String, option: String) throws(FrameDumpError) {
        var status = stat()
        if stat(directory, &status) == 0 { return }
        if mkdir(directory, 0o755) != 0 && Errno.current != Errno(rawValue: EEXIST) {
            throw .runtime("\(option) \(directory): mkdir failed: \(Errno.current)")
        }
    }

    /// Writes `bytes` to `directory/name` whole or not at all: into `.name.tmp` first, then
    /// rename(2) over the final name, so a reader (or a crash, ENOSPC, SIGKILL) never sees a
    /// partial file under the final name. On failure the temporary file is removed.
    static func writeAtomically(_ bytes: UnsafeRawBufferPointer, directory: String, name: String, option: String) throws(FrameDumpError) {
        let path = "\(directory)/\(name)"
        let temporary = "\(directory)/.\(name).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .runtime("\(option): cannot create \(temporary): \(Errno.current)") }
        var written = 0
        while written < bytes.count {
            let result = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
            if result < 0 {
                if Errno.current == .interrupted { continue }
                let errno = Errno.current
                close(fd)
                unlink(temporary)
                throw .runtime("\(option): writing \(temporary) failed: \(errno); \(path) was not written")
            }
            written += result
        }
        if close(fd) != 0 {
            let errno = Errno.current
            unlink(temporary)
            throw .runtime("\(option): closing \(temporary) failed: \(errno); \(path) was not written")
        }
        if rename(temporary, path) != 0 {
            let errno = Errno.current
            unlink(temporary)
            throw .runtime("\(option): rename \(temporary) -> \(path) failed: \(errno)")
        }
    }
}

/// Writes every `every`-th frame's compressed bytes, as the camera sent them, to
/// `frame-NNNNNN.jpg` (numbered by frame index), each whole or not at all (a temporary name,
/// then rename). For MJPEG/JPEG formats only.
public final class JPEGSink: FrameSink {
    public let directory: String
    public let every: Int
    /// Files written so far.
    public private(set) var filesWritten = 0

    public static func fileName(index: Int) -> String {
        var digits = String(index)
        while digits.count < 6 { digits = "0" + digits }
        return "frame-\(digits).jpg"
    }

    public static func checkDirectory(_ directory: String) throws(FrameDumpError) {
        try OutputDirectory.check(directory, option: "--jpeg-dir")
    }

    public static func checkFormat(_ format: ImageFormat) throws(FrameDumpError) {
        guard format.pixelFormat.isJPEG else {
            throw .usage("--jpeg-dir: pixel format \(format.pixelFormat) is not JPEG; --jpeg-dir writes MJPEG/JPEG frames as they come (use --pixel-format MJPG, or --png-dir)")
        }
    }

    public init(directory: String, every: Int, format: ImageFormat) throws(FrameDumpError) {
        guard every >= 1 else { throw .usage("--every: must be at least 1, got \(every)") }
        try JPEGSink.checkFormat(format)
        self.directory = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        self.every = every
    }

    public func createDirectory() throws(FrameDumpError) {
        try OutputDirectory.create(directory, option: "--jpeg-dir")
    }

    public func write(_ payload: borrowing FramePayload, index: Int) throws(FrameDumpError) {
        guard index % every == 0 else { return }
        try OutputDirectory.writeAtomically(payload.unsafeCompressedBytes, directory: directory, name: JPEGSink.fileName(index: index),
                                            option: "--jpeg-dir")
        filesWritten += 1
    }

    public func finish() throws(FrameDumpError) {}
}

/// Frames a decoding sink (PNG or y4m of MJPEG) did not turn into a picture, and why.
public protocol DecodingSink: FrameSink {
    /// Frames that could not be decoded (corrupt, or refused by libjpeg): no picture was written for them.
    var framesNotDecoded: Int { get }
    /// Why the last one could not be.
    var lastDecodeError: String? { get }
}
