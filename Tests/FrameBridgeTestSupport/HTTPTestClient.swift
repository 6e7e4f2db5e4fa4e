import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A bare HTTP/1.1 client (tests of `framedump serve`) over a TCP socket to 127.0.0.1, for tests that need to send what a
/// browser would not (half requests, huge heads) and to read a multipart stream part by part.
public final class HTTPTestClient: @unchecked Sendable {
    public let descriptor: Int32
    private var buffer: [UInt8] = []

    public init(port: Int) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw TestClientError("socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(descriptor)
            throw TestClientError("connect: \(errno)")
        }
    }

    deinit { close(descriptor) }

    public func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    }

    /// Reads until `count` bytes are buffered or the peer closes; false on close or timeout.
    private func fill(_ count: Int) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while buffer.count < count {
            let n = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if n <= 0 { return false }
            buffer += chunk[0..<n]
        }
        return true
    }

    /// The next line, without its CRLF.
    public func line() -> String? {
        while true {
            if let end = buffer.firstIndex(of: 10) {
                var line = Array(buffer[..<end])
                buffer.removeFirst(end + 1)
                if line.last == 13 { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            guard fill(buffer.count + 1) else { return nil }
        }
    }

    public func bytes(_ count: Int) -> [UInt8]? {
        guard fill(count) else { return nil }
        defer { buffer.removeFirst(count) }
        return Array(buffer[0..<count])
    }

    /// Everything until the peer closes.
    public func rest() -> [UInt8] {
        _ = fill(Int.max)
        defer { buffer = [] }
        return buffer
    }

    /// A status line and headers (names lowercased).
    public func head() -> (status: Int, headers: [String: String])? {
        guard let statusLine = line() else { return nil }
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        var headers: [String: String] = [:]
        while let line = line(), !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return (status, headers)
    }

    /// One part of a multipart stream: its headers and body.
    public func part() -> (headers: [String: String], body: [UInt8])? {
        var boundary = line()
        while boundary == "" { boundary = line() }
        guard let boundary, boundary.hasPrefix("--") else { return nil }
        var headers: [String: String] = [:]
        while let line = line(), !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        guard let length = headers["content-length"].flatMap(Int.init), let body = bytes(length) else { return nil }
        return (headers, body)
    }

    /// GET `path` and the whole answer (the server closes after each non-stream answer).
    public static func get(_ path: String, port: Int, method: String = "GET", headers: String = "") throws -> (status: Int, headers: [String: String], body: [UInt8]) {
        let client = try HTTPTestClient(port: port)
        client.send("\(method) \(path) HTTP/1.1\r\nHost: test\r\n\(headers)\r\n")
        guard let head = client.head() else { throw TestClientError("no answer to \(method) \(path)") }
        return (head.status, head.headers, client.rest())
    }
}

public struct TestClientError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
