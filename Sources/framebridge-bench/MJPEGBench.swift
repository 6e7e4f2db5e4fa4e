// framebridge-bench mjpeg [--frames N] [--width W] [--height H]
//   MJPEG decoding: TurboJPEG (tjDecompress2 to RGB, tjDecompressToYUVPlanes) against
//   libv4lconvert's MJPEG -> RGB24 conversion, ms per frame, best of 5; and the cost of
//   writing a PNG of the decoded picture at each zlib level and filter choice.
import CFrameDump
import CMallocCounter
import CTurboJPEG
import CV4L2
import FrameBridge
import V4L2
import V4L2Simulator
#if canImport(Glibc)
import Glibc
#endif

func bestMilliseconds(runs: Int = 5, frames: Int, _ body: () -> Void) -> Double {
    var best = Double.infinity
    for _ in 0..<runs {
        let start = monotonicNanoseconds()
        for _ in 0..<frames { body() }
        best = min(best, Double(monotonicNanoseconds() - start) / 1e6 / Double(frames))
    }
    return best
}

/// A camera-like picture: the simulator's pattern plus deterministic noise of +-12 (sensor
/// noise makes real pictures compress far worse than flat colour bars).
func noisyPicture(width: Int, height: Int) -> [UInt8] {
    var rgb = SimulatedJPEG.pattern(width: width, height: height, variant: 1)
    var state: UInt32 = 0x1234_5678
    for i in rgb.indices {
        state = state &* 1_664_525 &+ 1_013_904_223
        let noise = Int(state >> 27) - 12 // 0...31 - 12 -> -12...19, skewed a little; fine for a benchmark
        rgb[i] = UInt8(clamping: Int(rgb[i]) + noise)
    }
    return rgb
}

func encodeJPEG(_ rgb: [UInt8], width: Int, height: Int, subsampling: Int32) -> [UInt8] {
    guard let handle = tjInitCompress() else { fail("tjInitCompress") }
    defer { tjDestroy(handle) }
    var output: UnsafeMutablePointer<UInt8>?
    var size: UInt = 0
    let result = rgb.withUnsafeBufferPointer {
        tjCompress2(handle, $0.baseAddress, Int32(width), Int32(width * 3), Int32(height), Int32(TJPF_RGB.rawValue),
                    &output, &size, subsampling, 85, 0)
    }
    guard result == 0, let output else { fail("tjCompress2") }
    defer { tjFree(output) }
    return Array(UnsafeBufferPointer(start: output, count: Int(size)))
}

func runMJPEGBench() {
    let frames = argument("--frames", default: 30)
    let width = argument("--width", default: 1280)
    let height = argument("--height", default: 720)
    let pictures: [(String, [UInt8])] = [
        ("bars", SimulatedJPEG.pattern(width: width, height: height, variant: 1)),
        ("noisy", noisyPicture(width: width, height: height)),
    ]
    let rgbBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: width * height * 3, alignment: 64)
    let yuvBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: width * height * 3, alignment: 64)
    defer {
        rgbBuffer.deallocate()
        yuvBuffer.deallocate()
    }
    guard let decoder = try? JPEGDecoder() else { fail("JPEGDecoder") }
    // libv4lconvert needs a device to query: a simulated MJPEG camera, its ioctls through dev_ops.
    let backend = SimulatedV4L2Backend(path: devicePath, configuration: SimulatedDeviceConfiguration(
        initialPixelFormat: .mjpeg, initialWidth: UInt32(width), initialHeight: UInt32(height), mjpeg: SimulatedMJPEG()))
    guard case .success(let fd) = backend.open(path: devicePath, flags: O_RDWR) else { fail("open the simulated camera") }
    let (context, operations) = makeDevOps(backend)
    guard let converter = v4lconvert_create_with_dev_ops(fd, context, operations) else { fail("v4lconvert_create failed") }
    defer { v4lconvert_destroy(converter) }
    for (name, rgb) in pictures {
        let jpeg = encodeJPEG(rgb, width: width, height: height, subsampling: 2)
        var source = v4l2_format()
        source.type = BufferType.videoCapture.rawValue
        source.fmt.pix.width = UInt32(width)
        source.fmt.pix.height = UInt32(height)
        source.fmt.pix.pixelformat = FourCC.mjpeg.rawValue
        source.fmt.pix.field = 1
        source.fmt.pix.sizeimage = UInt32(jpeg.count)
        var destination = v4l2_format()
        destination.type = BufferType.videoCapture.rawValue
        destination.fmt.pix.width = UInt32(width)
        destination.fmt.pix.height = UInt32(height)
        destination.fmt.pix.pixelformat = FourCC.rgb24.rawValue
        destination.fmt.pix.field = 1
        destination.fmt.pix.bytesperline = UInt32(width * 3)
        destination.fmt.pix.sizeimage = UInt32(width * height * 3)
        var failed = false
        jpeg.withUnsafeBytes { bytes in
            let v4l = bestMilliseconds(frames: frames) {
                let result = v4lconvert_convert(converter, &source, &destination,
                                                UnsafeMutablePointer(mutating: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)),
                                                Int32(bytes.count), rgbBuffer.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                Int32(rgbBuffer.count))
                if result < 0 { failed = true }
            }
            if failed { print("v4lconvert failed: \(String(cString: v4lconvert_get_error_message(converter)))") }
            let tjRGB = bestMilliseconds(frames: frames) {
                do { try decoder.decodeRGB(bytes, into: rgbBuffer) } catch { failed = true }
            }
            let tjYUV = bestMilliseconds(frames: frames) {
                do { try decoder.decodeYUV(bytes, into: yuvBuffer) } catch { failed = true }
            }
            let before = cmalloc_counter_allocations()
            for _ in 0..<frames { _ = try? decoder.decodeYUV(bytes, into: yuvBuffer) }
            let mallocs = Double(cmalloc_counter_allocations() - before) / Double(frames)
            print("figure: mjpeg-decode-\(name)-\(width)x\(height) turbojpeg-rgb-ms \(tjRGB) turbojpeg-yuv-ms \(tjYUV) v4lconvert-rgb24-ms \(v4l) jpeg-bytes \(jpeg.count) mallocs-per-yuv-decode \(mallocs)")
        }
        if failed { fail("a decode failed") }
        // PNG of the decoded picture, by zlib level and filter (-1 = libpng default: adaptive).
        jpeg.withUnsafeBytes { bytes in _ = try? decoder.decodeRGB(bytes, into: rgbBuffer) }
        let path = "/tmp/framebridge-bench-\(getpid()).png"
        var error = [CChar](repeating: 0, count: 256)
        for (filterName, filters) in [("adaptive", Int32(-1)), ("none", Int32(0x08)), ("sub", Int32(0x10)), ("up", Int32(0x20))] {
            for level in [0, 1, 2, 3, 6, 9] {
                let ms = bestMilliseconds(runs: 3, frames: max(1, frames / 3)) {
                    _ = cframedump_write_png_rgb24_level(path, rgbBuffer.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                    UInt32(width), UInt32(height), width * 3, Int32(level), filters,
                                                    &error, error.count)
                }
                var status = stat()
                stat(path, &status)
                print("figure: png-\(name)-\(width)x\(height) level \(level) filter \(filterName) ms \(ms) bytes \(status.st_size)")
            }
        }
        unlink(path)
    }
}

/// A `struct libv4l_dev_ops` whose ioctl goes to `backend` (as FrameDump's BackendIoctlBridge).
nonisolated(unsafe) var benchBackend: (any DeviceBackend)?

func makeDevOps(_ backend: any DeviceBackend) -> (UnsafeMutableRawPointer?, OpaquePointer) {
    benchBackend = backend
    let table = UnsafeMutablePointer<UnsafeRawPointer?>.allocate(capacity: 12)
    table.initialize(repeating: nil, count: 12)
    let ioctl: @convention(c) (UnsafeMutableRawPointer?, Int32, UInt, UnsafeMutableRawPointer?) -> Int32 = { _, fd, request, argument in
        guard let argument, let backend = benchBackend else { cv4l2_set_errno(EINVAL); return -1 }
        if let errno = backend.ioctl(fd, request: request, argument: argument) {
            cv4l2_set_errno(errno.rawValue)
            return -1
        }
        return 0
    }
    let read: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeMutableRawPointer?, Int) -> Int = { _, _, _, _ in
        cv4l2_set_errno(EINVAL)
        return -1
    }
    let write: @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafeRawPointer?, Int) -> Int = { _, _, _, _ in
        cv4l2_set_errno(EINVAL)
        return -1
    }
    table[2] = unsafeBitCast(ioctl, to: UnsafeRawPointer.self)
    table[3] = unsafeBitCast(read, to: UnsafeRawPointer.self)
    table[4] = unsafeBitCast(write, to: UnsafeRawPointer.self)
    return (nil, OpaquePointer(table))
}
