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
        let path = FilePath(directory).appending(name)
        let temporary = FilePath(directory).appending(".\(name).tmp")
        let file: FileDescriptor
        do {
            file = try FileDescriptor.open(temporary, .writeOnly, options: [.create, .truncate, .closeOnExec],
                                           permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw .runtime("\(option): cannot create \(temporary): \(Self.errno(error))")
        }
        do {
            _ = try file.writeAll(bytes) // retries EINTR and short writes
        } catch {
            try? file.close()
            _ = unlink(temporary.string)
            throw .runtime("\(option): writing \(temporary) failed: \(Self.errno(error)); \(path) was not written")
        }
        do {
            try file.close()
        } catch {
            _ = unlink(temporary.string)
            throw .runtime("\(option): closing \(temporary) failed: \(Self.errno(error)); \(path) was not written")
        }
        if rename(temporary.string, path.string) != 0 {
            let errno = Errno.current
            _ = unlink(temporary.string)
            throw .runtime("\(option): rename \(temporary) -> \(path) failed: \(errno)")
        }
    }

    /// swift-system's calls throw its `Errno`, untyped.
    private static func errno(_ error: any Error) -> Errno {
        (error as? Errno) ?? .ioError
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
