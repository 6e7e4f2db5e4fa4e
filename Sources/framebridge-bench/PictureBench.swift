// framebridge-bench png-convert [--frames N] [--width W] [--height H]
//   The conversion of an uncompressed frame to the RGB24 of a PNG, ms per frame, best of 5:
//   framedump's (libswscale through PNGSink: staging copy with the driver's lines, then
//   sws_scale with bilinear, full chroma interpolation and accurate rounding) beside the
//   libv4lconvert call it replaced (v4lconvert_convert of the same frame, BT.601 only).
import CV4L2
import FrameDump
import V4L2
import V4L2Simulator
#if canImport(Glibc)
import Glibc
#endif

func runPictureBench() {
    let frames = argument("--frames", default: 30)
    let width = argument("--width", default: 1280)
    let height = argument("--height", default: 720)
    let rgbBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: width * height * 3, alignment: 64)
    defer { rgbBuffer.deallocate() }
    let backend = SimulatedV4L2Backend(path: devicePath, configuration: SimulatedDeviceConfiguration(
        initialWidth: UInt32(width), initialHeight: UInt32(height)))
    guard case .success(let fd) = backend.open(path: devicePath, flags: O_RDWR) else { fail("open the simulated device") }
    let (context, operations) = makeDevOps(backend)
    guard let converter = v4lconvert_create_with_dev_ops(fd, context, operations) else { fail("v4lconvert_create failed") }
    defer { v4lconvert_destroy(converter) }
    for (fourcc, bytesPerLine, size) in [("YUYV", width * 2, width * height * 2), ("NV12", width, width * height * 3 / 2),
                                         ("YU12", width, width * height * 3 / 2), ("RGB3", width * 3, width * height * 3)] {
        // A frame with some structure: luma ramps, chroma bands.
        var frame = [UInt8](repeating: 0, count: size)
        for k in 0..<size { frame[k] = UInt8(truncatingIfNeeded: (k * 7 + (k / bytesPerLine) * 3) & 0xff) }
        let format = ImageFormat(bufferType: .videoCapture, width: UInt32(width), height: UInt32(height), pixelFormat: FourCC(fourcc)!,
                                 field: 1, colorspace: 8, planes: [PlaneFormat(bytesPerLine: UInt32(bytesPerLine), sizeImage: UInt32(size))])
        guard let sink = try? PNGSink(directory: "/tmp", every: 1, format: format) else { fail("PNGSink for \(fourcc)") }
        var source = v4l2_format()
        source.type = BufferType.videoCapture.rawValue
        source.fmt.pix.width = UInt32(width)
        source.fmt.pix.height = UInt32(height)
        source.fmt.pix.pixelformat = FourCC(fourcc)!.rawValue
        source.fmt.pix.field = 1
        source.fmt.pix.bytesperline = UInt32(bytesPerLine)
        source.fmt.pix.sizeimage = UInt32(size)
        var destination = v4l2_format()
        destination.type = BufferType.videoCapture.rawValue
        destination.fmt.pix.width = UInt32(width)
        destination.fmt.pix.height = UInt32(height)
        destination.fmt.pix.pixelformat = FourCC.rgb24.rawValue
        destination.fmt.pix.field = 1
        destination.fmt.pix.bytesperline = UInt32(width * 3)
        destination.fmt.pix.sizeimage = UInt32(width * height * 3)
        var failed = false
        frame.withUnsafeMutableBytes { bytes in
            let v4l = bestMilliseconds(frames: frames) {
                let result = v4lconvert_convert(converter, &source, &destination, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                Int32(bytes.count), rgbBuffer.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                Int32(rgbBuffer.count))
                if result < 0 { failed = true }
            }
            let planes = [UnsafeRawBufferPointer(bytes)]
            let swscale = bestMilliseconds(frames: frames) {
                do { try sink.convert(planes) } catch { failed = true }
            }
            print("figure: png-convert-\(fourcc)-\(width)x\(height) swscale-ms \(swscale) v4lconvert-ms \(v4l)")
        }
        if failed { fail("a conversion of \(fourcc) failed") }
    }
}
