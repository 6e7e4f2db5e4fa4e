/// The USB/IP wire format (Linux Documentation/usb/usbip_protocol.rst): 48-byte headers,
/// every field big-endian, the setup packet as it is on the bus (little-endian fields).
public enum USBIP {
    public static let headerSize = 48
    public static let isoDescriptorSize = 16

    public enum Command: UInt32, Sendable {
        case submit = 1, unlink = 2, returnSubmit = 3, returnUnlink = 4
    }

    /// Direction as USB/IP spells it: 0 out (host to device), 1 in.
    public enum Direction: UInt32, Sendable { case out = 0, `in` = 1 }

    /// One isochronous packet descriptor.
    public struct IsoPacket: Sendable, Equatable {
        public var offset: UInt32
        public var length: UInt32
        public var actualLength: UInt32
        public var status: Int32
        public init(offset: UInt32, length: UInt32, actualLength: UInt32 = 0, status: Int32 = 0) {
            self.offset = offset; self.length = length; self.actualLength = actualLength; self.status = status
        }
    }

    /// A CMD_SUBMIT as the host (vhci_hcd) sends it.
    public struct Submit: Sendable {
        public var seqnum: UInt32
        public var devid: UInt32
        public var direction: Direction
        public var endpoint: UInt32
        public var transferFlags: UInt32
        public var transferBufferLength: Int32
        public var startFrame: Int32
        public var numberOfPackets: Int32
        public var interval: Int32
        public var setup: [UInt8]           // 8 bytes
        public var data: [UInt8]            // OUT payload
        public var isoPackets: [IsoPacket]
    }

    /// A CMD_UNLINK: cancel the submit with `victim`.
    public struct Unlink: Sendable {
        public var seqnum: UInt32
        public var victim: UInt32
    }

    public enum Message: Sendable {
        case submit(Submit)
        case unlink(Unlink)
    }

    public struct ProtocolError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses one message from the front of `buffer` when it is complete; returns it and the
    /// number of bytes it took, or nil when more bytes are needed. `isIsochronous` says whether
    /// an endpoint number (with direction) carries isochronous packet descriptors.
    public static func parse(_ buffer: UnsafeRawBufferPointer,
                             isIsochronous: (UInt32, Direction) -> Bool) throws -> (Message, Int)? {
        guard buffer.count >= headerSize else { return nil }
        func u32(_ at: Int) -> UInt32 { UInt32(bigEndian: buffer.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
        func i32(_ at: Int) -> Int32 { Int32(bitPattern: u32(at)) }
        let command = u32(0)
        switch Command(rawValue: command) {
        case .submit:
            guard let direction = Direction(rawValue: u32(12)) else {
                throw ProtocolError(description: "CMD_SUBMIT with direction \(u32(12))")
            }
            let endpoint = u32(16)
            let length = i32(24)
            let packets = i32(32)
            guard length >= 0, length <= 16 << 20 else {
                throw ProtocolError(description: "CMD_SUBMIT with transfer_buffer_length \(length)")
            }
            let iso = isIsochronous(endpoint, direction) && packets > 0
            guard !iso || packets <= 1024 else {
                throw ProtocolError(description: "CMD_SUBMIT with \(packets) isochronous packets")
            }
            let dataBytes = direction == .out ? Int(length) : 0
            let isoBytes = iso ? Int(packets) * isoDescriptorSize : 0
            let total = headerSize + dataBytes + isoBytes
            guard buffer.count >= total else { return nil }
            var isoPackets: [IsoPacket] = []
            if iso {
                isoPackets.reserveCapacity(Int(packets))
                for i in 0..<Int(packets) {
                    let at = headerSize + dataBytes + i * isoDescriptorSize
                    isoPackets.append(IsoPacket(offset: u32(at), length: u32(at + 4), actualLength: u32(at + 8), status: i32(at + 12)))
                }
            }
            let submit = Submit(
                seqnum: u32(4), devid: u32(8), direction: direction, endpoint: endpoint,
                transferFlags: u32(20), transferBufferLength: length, startFrame: i32(28),
                numberOfPackets: packets, interval: i32(36),
                setup: Array(buffer[40..<48]),
                data: Array(buffer[headerSize..<(headerSize + dataBytes)]),
                isoPackets: isoPackets)
            return (.submit(submit), total)
        case .unlink:
            return (.unlink(Unlink(seqnum: u32(4), victim: u32(20))), headerSize)
        default:
            throw ProtocolError(description: "unknown USB/IP command \(command)")
        }
    }

    /// The 48-byte RET_SUBMIT header.
    public static func returnSubmitHeader(seqnum: UInt32, status: Int32, actualLength: Int32,
                                          startFrame: Int32, numberOfPackets: Int32, errorCount: Int32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: headerSize)
        put(&bytes, 0, Command.returnSubmit.rawValue)
        put(&bytes, 4, seqnum)
        put(&bytes, 20, UInt32(bitPattern: status))
        put(&bytes, 24, UInt32(bitPattern: actualLength))
        put(&bytes, 28, UInt32(bitPattern: startFrame))
        put(&bytes, 32, UInt32(bitPattern: numberOfPackets))
        put(&bytes, 36, UInt32(bitPattern: errorCount))
        return bytes
    }

    /// The 48-byte RET_UNLINK header.
    public static func returnUnlinkHeader(seqnum: UInt32, status: Int32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: headerSize)
        put(&bytes, 0, Command.returnUnlink.rawValue)
        put(&bytes, 4, seqnum)
        put(&bytes, 20, UInt32(bitPattern: status))
        return bytes
    }

    /// Isochronous descriptors as they follow a RET_SUBMIT's data.
    public static func encode(_ packets: [IsoPacket]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: packets.count * isoDescriptorSize)
        for (i, p) in packets.enumerated() {
            let at = i * isoDescriptorSize
            put(&bytes, at, p.offset)
            put(&bytes, at + 4, p.length)
            put(&bytes, at + 8, p.actualLength)
            put(&bytes, at + 12, UInt32(bitPattern: p.status))
        }
        return bytes
    }

    static func put(_ bytes: inout [UInt8], _ at: Int, _ value: UInt32) {
        bytes[at] = UInt8(value >> 24)
        bytes[at + 1] = UInt8((value >> 16) & 0xFF)
        bytes[at + 2] = UInt8((value >> 8) & 0xFF)
        bytes[at + 3] = UInt8(value & 0xFF)
    }
}
