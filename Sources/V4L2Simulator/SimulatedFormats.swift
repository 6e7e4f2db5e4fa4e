import V4L2

/// A pixel format a simulated device offers and how its planes are laid out.
struct SimulatedPixelFormat {
    let fourcc: FourCC
    let description: String
    /// Memory planes (buffers) per frame: 2 for NM12, else 1.
    let planeCount: Int
    /// 4:2:0 formats need an even height.
    let isVerticallySubsampled: Bool
    /// ENUM_FMT reports V4L2_FMT_FLAG_COMPRESSED; frames are JPEG pictures of varying size.
    var isCompressed = false

    static let yuyv = SimulatedPixelFormat(fourcc: .yuyv, description: "YUYV 4:2:2", planeCount: 1, isVerticallySubsampled: false)
    static let rgb24 = SimulatedPixelFormat(fourcc: .rgb24, description: "24-bit RGB 8-8-8", planeCount: 1, isVerticallySubsampled: false)
    static let nv12 = SimulatedPixelFormat(fourcc: .nv12, description: "Y/UV 4:2:0", planeCount: 1, isVerticallySubsampled: true)
    static let nv12m = SimulatedPixelFormat(fourcc: .nv12m, description: "Y/UV 4:2:0 (N-C)", planeCount: 2, isVerticallySubsampled: true)
    /// uvcvideo's name for it.
    static let mjpeg = SimulatedPixelFormat(fourcc: .mjpeg, description: "Motion-JPEG", planeCount: 1,
                                            isVerticallySubsampled: false, isCompressed: true)

    /// The formats of a device, in VIDIOC_ENUM_FMT order (MJPEG last, when configured).
    static func formats(multiplanar: Bool, mjpeg: Bool = false) -> [SimulatedPixelFormat] {
        (multiplanar ? [.yuyv, .rgb24, .nv12, .nv12m] : [.yuyv, .rgb24, .nv12]) + (mjpeg ? [.mjpeg] : [])
    }

    /// Bytes per line and image size of each plane for a frame of `width` x `height`;
    /// `dataOffset` is added to plane 0's size. MJPEG: bytes per line 0 and sizeimage the
    /// largest frame (`maximumFrameSize`, as uvcvideo reports the camera's dwMaxVideoFrameSize).
    func planes(width: UInt32, height: UInt32, dataOffset: UInt32, maximumFrameSize: UInt32? = nil) -> [PlaneFormat] {
        var result: [PlaneFormat]
        switch fourcc {
        case .mjpeg:
            result = [PlaneFormat(bytesPerLine: 0, sizeImage: maximumFrameSize ?? width * height * 2)]
        case .yuyv:
            result = [PlaneFormat(bytesPerLine: width * 2, sizeImage: width * 2 * height)]
        case .rgb24:
            result = [PlaneFormat(bytesPerLine: width * 3, sizeImage: width * 3 * height)]
        case .nv12:
            result = [PlaneFormat(bytesPerLine: width, sizeImage: width * height + width * height / 2)]
        default: // NM12
            result = [PlaneFormat(bytesPerLine: width, sizeImage: width * height),
                      PlaneFormat(bytesPerLine: width, sizeImage: width * height / 2)]
        }
        result[0].sizeImage += dataOffset
        return result
    }
}

/// The current format of a simulated device.
struct SimulatedFormat {
    var pixelFormat: SimulatedPixelFormat
    var width: UInt32
    var height: UInt32
    var planes: [PlaneFormat]
}

extension SimulatedFrameSizes {
    /// The size a driver would choose for a request: the nearest discrete size, or the
    /// request clamped and rounded to the grid.
    func nearest(width: UInt32, height: UInt32) -> SimulatedFrameSize {
        switch self {
        case .discrete(let sizes):
            var best = sizes.first ?? SimulatedFrameSize(width: 640, height: 480)
            var bestError = UInt64.max
            for size in sizes {
                let error = UInt64(abs(Int64(size.width) - Int64(width)) + abs(Int64(size.height) - Int64(height)))
                if error < bestError {
                    best = size
                    bestError = error
                }
            }
            return best
        case let .stepwise(minWidth, maxWidth, stepWidth, minHeight, maxHeight, stepHeight):
            return SimulatedFrameSize(width: Self.bound(width, minWidth, maxWidth, stepWidth),
                                      height: Self.bound(height, minHeight, maxHeight, stepHeight))
        }
    }

    /// Whether `width` x `height` is one of the sizes.
    func contains(width: UInt32, height: UInt32) -> Bool {
        switch self {
        case .discrete(let sizes):
            return sizes.contains { $0.width == width && $0.height == height }
        case let .stepwise(minWidth, maxWidth, stepWidth, minHeight, maxHeight, stepHeight):
            return width >= minWidth && width <= maxWidth && (width - minWidth) % max(stepWidth, 1) == 0
                && height >= minHeight && height <= maxHeight && (height - minHeight) % max(stepHeight, 1) == 0
        }
    }

    private static func bound(_ value: UInt32, _ minimum: UInt32, _ maximum: UInt32, _ step: UInt32) -> UInt32 {
        let step = max(step, 1)
        let clamped = min(max(value, minimum), maximum)
        let rounded = minimum + (clamped - minimum + step / 2) / step * step
        return rounded > maximum ? rounded - step : rounded
    }
}
