import SystemPackage
import CV4L2
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// The few system calls the simulator makes itself.
enum SystemCalls {
    static let pageSize: Int = {
        let size = sysconf(Int32(_SC_PAGESIZE))
        return size > 0 ? size : 4096
    }()

    static func pageAligned(_ length: Int) -> Int {
        (length + pageSize - 1) / pageSize * pageSize
    }

    private typealias MemfdCreate = @convention(c) (UnsafePointer<CChar>, UInt32) -> Int32

    /// memfd_create(2), which Glibc's Swift module does not declare (it needs _GNU_SOURCE).
    private static let memfdCreate: MemfdCreate? = {
        guard let symbol = dlsym(nil, "memfd_create") else { return nil }
        return unsafeBitCast(symbol, to: MemfdCreate.self)
    }()

    /// An anonymous shared-memory file of `length` bytes (close-on-exec), or the errno.
    static func anonymousMemory(length: Int) -> Result<Int32, Errno> {
        var fd: Int32 = -1
        if let memfdCreate {
            fd = memfdCreate("v4l2sim-buffer", 1 /* MFD_CLOEXEC */)
        }
        if fd < 0 {
            // Without memfd_create: a POSIX shared memory object, unlinked at once.
            let name = "/v4l2sim-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
            fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 { shm_unlink(name) }
        }
        guard fd >= 0 else { return .failure(.current) }
        if ftruncate(fd, off_t(length)) != 0 {
            let errno = Errno.current
            Glibc.close(fd)
            return .failure(errno)
        }
        return .success(fd)
    }

    /// mmap(2), shared.
    static func map(_ fd: Int32, length: Int, protection: Int32, offset: Int64 = 0) -> Result<UnsafeMutableRawPointer, Errno> {
        let address = Glibc.mmap(nil, length, protection, MAP_SHARED, fd, off_t(offset))
        guard let address, address != cv4l2_map_failed() else { return .failure(.current) }
        return .success(address)
    }

    /// The size and identity of an open file, or nil when `fd` is not open.
    static func fileInfo(_ fd: Int32) -> (size: Int, device: UInt64, inode: UInt64)? {
        guard fd >= 0 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return (Int(info.st_size), UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// Whether `descriptor` is a memfd (its /proc link reads `/memfd:...`).
    static func isMemfd(_ descriptor: Int32) -> Bool {
        var target = [CChar](repeating: 0, count: 64)
        let count = readlink("/proc/self/fd/\(descriptor)", &target, target.count - 1)
        guard count > 7 else { return false }
        return String(decoding: target.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("/memfd:")
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    static func monotonicNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    /// A fresh descriptor on /dev/null, so simulated descriptors are real, unique numbers.
    static func placeholderDescriptor() -> Result<Int32, Errno> {
        let fd = cv4l2_open("/dev/null", O_RDWR)
        return fd >= 0 ? .success(fd) : .failure(.current)
    }

    /// Copies `text` into a fixed-size C character array, NUL-terminated and zero-padded.
    static func copy<T>(_ text: String, into field: inout T) {
        withUnsafeMutableBytes(of: &field) { bytes in
            guard bytes.count > 0 else { return }
            var count = 0
            for byte in text.utf8 where count < bytes.count - 1 {
                bytes[count] = byte
                count += 1
            }
            for i in count..<bytes.count { bytes[i] = 0 }
        }
    }

    /// Zeroes a C value in place.
    static func zero<T>(_ value: UnsafeMutablePointer<T>) {
        UnsafeMutableRawPointer(value).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<T>.size)
    }
}

/// The `VIDIOC_*` name of a request, for messages.
func ioctlName(_ request: UInt) -> String {
    switch request {
    case CV4L2_VIDIOC_QUERYCAP: return "VIDIOC_QUERYCAP"
    case CV4L2_VIDIOC_ENUM_FMT: return "VIDIOC_ENUM_FMT"
    case CV4L2_VIDIOC_G_FMT: return "VIDIOC_G_FMT"
    case CV4L2_VIDIOC_S_FMT: return "VIDIOC_S_FMT"
    case CV4L2_VIDIOC_TRY_FMT: return "VIDIOC_TRY_FMT"
    case CV4L2_VIDIOC_REQBUFS: return "VIDIOC_REQBUFS"
    case CV4L2_VIDIOC_CREATE_BUFS: return "VIDIOC_CREATE_BUFS"
    case CV4L2_VIDIOC_QUERYBUF: return "VIDIOC_QUERYBUF"
    case CV4L2_VIDIOC_QBUF: return "VIDIOC_QBUF"
    case CV4L2_VIDIOC_DQBUF: return "VIDIOC_DQBUF"
    case CV4L2_VIDIOC_EXPBUF: return "VIDIOC_EXPBUF"
    case CV4L2_VIDIOC_STREAMON: return "VIDIOC_STREAMON"
    case CV4L2_VIDIOC_STREAMOFF: return "VIDIOC_STREAMOFF"
    case CV4L2_VIDIOC_G_PARM: return "VIDIOC_G_PARM"
    case CV4L2_VIDIOC_S_PARM: return "VIDIOC_S_PARM"
    case CV4L2_VIDIOC_ENUMINPUT: return "VIDIOC_ENUMINPUT"
    case CV4L2_VIDIOC_G_INPUT: return "VIDIOC_G_INPUT"
    case CV4L2_VIDIOC_S_INPUT: return "VIDIOC_S_INPUT"
    case CV4L2_VIDIOC_ENUM_FRAMESIZES: return "VIDIOC_ENUM_FRAMESIZES"
    case CV4L2_VIDIOC_ENUM_FRAMEINTERVALS: return "VIDIOC_ENUM_FRAMEINTERVALS"
    case CV4L2_VIDIOC_QUERYCTRL: return "VIDIOC_QUERYCTRL"
    case CV4L2_VIDIOC_QUERY_EXT_CTRL: return "VIDIOC_QUERY_EXT_CTRL"
    case CV4L2_VIDIOC_QUERYMENU: return "VIDIOC_QUERYMENU"
    case CV4L2_VIDIOC_G_CTRL: return "VIDIOC_G_CTRL"
    case CV4L2_VIDIOC_S_CTRL: return "VIDIOC_S_CTRL"
    case CV4L2_VIDIOC_G_EXT_CTRLS: return "VIDIOC_G_EXT_CTRLS"
    case CV4L2_VIDIOC_S_EXT_CTRLS: return "VIDIOC_S_EXT_CTRLS"
    case CV4L2_VIDIOC_SUBSCRIBE_EVENT: return "VIDIOC_SUBSCRIBE_EVENT"
    case CV4L2_VIDIOC_UNSUBSCRIBE_EVENT: return "VIDIOC_UNSUBSCRIBE_EVENT"
    case CV4L2_VIDIOC_DQEVENT: return "VIDIOC_DQEVENT"
    case CV4L2_VIDIOC_QUERY_DV_TIMINGS: return "VIDIOC_QUERY_DV_TIMINGS"
    case CV4L2_VIDIOC_G_DV_TIMINGS: return "VIDIOC_G_DV_TIMINGS"
    case CV4L2_VIDIOC_S_DV_TIMINGS: return "VIDIOC_S_DV_TIMINGS"
    case CV4L2_VIDIOC_ENCODER_CMD: return "VIDIOC_ENCODER_CMD"
    case CV4L2_VIDIOC_TRY_ENCODER_CMD: return "VIDIOC_TRY_ENCODER_CMD"
    case CV4L2_VIDIOC_DECODER_CMD: return "VIDIOC_DECODER_CMD"
    case CV4L2_VIDIOC_TRY_DECODER_CMD: return "VIDIOC_TRY_DECODER_CMD"
    default: return "ioctl 0x" + String(request, radix: 16)
    }
}
