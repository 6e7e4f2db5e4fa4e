#if canImport(Glibc)
import Glibc
#endif

/// Plugging the emulated camera into the guest's `vhci_hcd`: the kernel takes one end of a
/// socket pair through sysfs (`PORT SOCKFD DEVID SPEED`) and speaks USB/IP on it, as it would
/// to a remote usbip host; the camera serves the other end. No usbipd is involved.
public enum VHCI {
    public static let controller = "/sys/devices/platform/vhci_hcd.0"
    /// High-speed ports of the first controller (vhci_hcd's default: 8 per speed).
    public static let highSpeedPorts = 0...7
    static let highSpeed = 3   // enum usb_device_speed: USB_SPEED_HIGH

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public var errno: Int32 = 0
    }

    /// Attaches on `port`, waiting up to `seconds` while the port is still busy (vhci_hcd frees a
    /// port a moment after the previous camera there was unplugged).
    public static func attach(port: Int, waitingUpTo seconds: Int) throws -> Int32 {
        var waited = 0
        while true {
            do {
                return try attach(port: port)
            } catch let failure as Failure where failure.errno == EBUSY && waited < seconds * 10 {
                usleep(100_000)
                waited += 1
            }
        }
    }

    /// Attaches on `port` and returns the camera's end of the connection.
    public static func attach(port: Int) throws -> Int32 {
        guard access(controller + "/attach", W_OK) == 0 else {
            throw Failure(description: "\(controller)/attach is not writable: \(String(cString: strerror(errno))) (load vhci-hcd: tools/vivid-vm --uvc)")
        }
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0 else {
            throw Failure(description: "socketpair: \(String(cString: strerror(errno)))")
        }
        let devid = (1 << 16) | (port + 2)       // busnum 1, devnum: any, unique per port
        let line = "\(port) \(pair[1]) \(devid) \(highSpeed)"
        let fd = open(controller + "/attach", O_WRONLY)
        guard fd >= 0 else {
            let e = errno
            close(pair[0]); close(pair[1])
            throw Failure(description: "open \(controller)/attach: \(String(cString: strerror(e)))")
        }
        let written = line.withCString { write(fd, $0, strlen($0)) }
        let writeErrno = errno
        close(fd)
        // The kernel holds its own reference to its end now.
        close(pair[1])
        guard written >= 0 else {
            close(pair[0])
            let hint = writeErrno == EBUSY ? " (port \(port) is in use: pick another --port)" : ""
            throw Failure(description: "attach to vhci_hcd port \(port) (\"\(line)\"): \(String(cString: strerror(writeErrno)))\(hint)",
                          errno: writeErrno)
        }
        var ignore = sigaction()
        ignore.__sigaction_handler.sa_handler = SIG_IGN
        sigaction(SIGPIPE, &ignore, nil)
        return pair[0]
    }

    /// The uvcvideo capture node of the camera on `port`, found by driver and sysfs index (not by
    /// node number): the video4linux device whose USB interface hangs below vhci_hcd.0 at that
    /// port, is bound to uvcvideo, and has index 0 (index 1 is the metadata node).
    public static func captureNode(port: Int) -> String? {
        guard let dir = opendir("/sys/class/video4linux") else { return nil }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name.hasPrefix("video") else { continue }
            let base = "/sys/class/video4linux/\(name)"
            guard let device = realPath(base + "/device"),
                  device.contains("/vhci_hcd.0/"),
                  realPath(base + "/device/driver").map({ $0.hasSuffix("/uvcvideo") }) == true,
                  readLine(base + "/index") == "0" else { continue }
            // .../usbB/B-P/B-P:1.0: the USB device's name ends in -(port + 1).
            let components = device.split(separator: "/")
            guard components.count >= 2 else { continue }
            let usbDevice = components[components.count - 2]
            guard usbDevice.hasSuffix("-\(port + 1)") else { continue }
            let node = "/dev/\(name)"
            if access(node, R_OK | W_OK) == 0 { return node }
        }
        return nil
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func readLine(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: " \n")
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
