/// USB and UVC 1.0 descriptors of the emulated camera: one configuration with an interface
/// association of a VideoControl interface (camera terminal -> processing unit with brightness
/// and contrast -> output terminal) and a VideoStreaming interface whose alternate setting 1
/// has an isochronous IN endpoint of 3 x 1024 bytes per microframe.
public enum UVCDescriptors {
    public static let vendorID: UInt16 = 0x1D6B      // Linux Foundation
    public static let productID: UInt16 = 0x0102     // the id of the kernel's webcam gadget
    public static let streamingEndpoint: UInt8 = 0x81
    /// wMaxPacketSize: 1024 bytes, 2 additional transactions per microframe (high bandwidth).
    public static let maxPacketSizeField: UInt16 = (2 << 11) | 1024
    public static let maxPayloadTransferSize = 3 * 1024
    public static let controlInterface: UInt8 = 0
    public static let streamingInterface: UInt8 = 1
    public static let cameraTerminalID: UInt8 = 1
    public static let processingUnitID: UInt8 = 2
    public static let outputTerminalID: UInt8 = 3

    public static func device() -> [UInt8] {
        var d: [UInt8] = [18, 0x01]
        d += le16(0x0200)                // bcdUSB 2.0
        d += [0xEF, 0x02, 0x01, 64]      // miscellaneous class, IAD; 64-byte EP0
        d += le16(vendorID) + le16(productID) + le16(0x0100)
        d += [1, 2, 3, 1]                // iManufacturer, iProduct, iSerialNumber, 1 configuration
        return d
    }

    public static func configuration(_ config: CameraConfiguration) -> [UInt8] {
        // VideoControl class-specific descriptors.
        let cameraTerminal: [UInt8] = [18, 0x24, 0x02, cameraTerminalID] + le16(0x0201) + [0, 0]
            + le16(0) + le16(0) + le16(0) + [3, 0, 0, 0]
        let processingUnit: [UInt8] = [11, 0x24, 0x05, processingUnitID, cameraTerminalID] + le16(0)
            + [2] + le16(0b11) + [0]     // bmControls: brightness, contrast
        let outputTerminal: [UInt8] = [9, 0x24, 0x03, outputTerminalID] + le16(0x0101) + [0, processingUnitID, 0]
        let vcBody = cameraTerminal + processingUnit + outputTerminal
        var vcHeader: [UInt8] = [13, 0x24, 0x01] + le16(0x0100)
        vcHeader += le16(UInt16(13 + vcBody.count)) + le32(48_000_000) + [1, streamingInterface]

        // VideoStreaming class-specific descriptors: per format a format, its frames, colour matching.
        var vsBody: [UInt8] = []
        let intervals = config.frameIntervals
        for (f, format) in config.formats.enumerated() {
            let index = UInt8(f + 1)
            switch format {
            case .yuyv:
                vsBody += [27, 0x24, 0x04, index, UInt8(config.sizes.count)]
                vsBody += [0x59, 0x55, 0x59, 0x32, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71]
                vsBody += [16, 1, 0, 0, 0, 0]
            case .mjpeg:
                vsBody += [11, 0x24, 0x06, index, UInt8(config.sizes.count), 0, 1, 0, 0, 0, 0]
            }
            for (s, size) in config.sizes.enumerated() {
                let maxSize = UInt32(config.maxFrameSize(format, size))
                let bitRateMax = maxSize * 8 * UInt32(config.framesPerSecond)
                var frame: [UInt8] = [UInt8(26 + 4 * intervals.count), 0x24, format == .yuyv ? 0x05 : 0x07, UInt8(s + 1), 0]
                frame += le16(UInt16(size.width)) + le16(UInt16(size.height))
                frame += le32(bitRateMax / 2) + le32(bitRateMax) + le32(maxSize) + le32(intervals[0])
                frame += [UInt8(intervals.count)]
                for interval in intervals { frame += le32(interval) }
                vsBody += frame
            }
            vsBody += [6, 0x24, 0x0D, 1, 1, 4]   // BT.709 primaries and transfer, SMPTE 170M matrix
        }
        let formatCount = config.formats.count
        var vsHeader: [UInt8] = [UInt8(13 + formatCount), 0x24, 0x01, UInt8(formatCount)]
        vsHeader += le16(UInt16(13 + formatCount + vsBody.count))
        vsHeader += [streamingEndpoint, 0, outputTerminalID, 0, 0, 0, 1] + [UInt8](repeating: 0, count: formatCount)

        let iad: [UInt8] = [8, 0x0B, controlInterface, 2, 0x0E, 0x03, 0x00, 2]
        let vcInterface: [UInt8] = [9, 0x04, controlInterface, 0, 0, 0x0E, 0x01, 0x00, 0]
        let vsInterface0: [UInt8] = [9, 0x04, streamingInterface, 0, 0, 0x0E, 0x02, 0x00, 0]
        let vsInterface1: [UInt8] = [9, 0x04, streamingInterface, 1, 1, 0x0E, 0x02, 0x00, 0]
        let endpoint: [UInt8] = [7, 0x05, streamingEndpoint, 0x05] + le16(maxPacketSizeField) + [1]
        let body = iad + vcInterface + vcHeader + vcBody + vsInterface0 + vsHeader + vsBody + vsInterface1 + endpoint
        var header: [UInt8] = [9, 0x02] + le16(UInt16(9 + body.count)) + [2, 1, 0, 0x80, 250]
        header += body
        return header
    }

    /// String descriptor `index` (0: the language list), or nil when there is none.
    public static func string(_ index: UInt8, _ config: CameraConfiguration) -> [UInt8]? {
        let text: String
        switch index {
        case 0: return [4, 0x03, 0x09, 0x04]
        case 1: text = config.manufacturer
        case 2: text = config.product
        case 3: text = config.serial
        default: return nil
        }
        let units = Array(text.utf16.prefix(126))
        var d: [UInt8] = [UInt8(2 + 2 * units.count), 0x03]
        for unit in units { d += le16(unit) }
        return d
    }

    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    static func le32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)] }
}
