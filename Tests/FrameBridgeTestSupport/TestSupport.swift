// Test helpers shared by the test targets.
import FrameBridge
import Foundation
import Synchronization
import V4L2
import XCTest
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Stream pointer helpers (StreamPointer is ~Copyable)

/// The pointer, or a test failure (XCTUnwrap cannot take non-copyable values).
public func unwrapPointer(_ pointer: consuming StreamPointer?, _ message: @autoclosure () -> String = "no frame",
                   file: StaticString = #filePath, line: UInt = #line) throws -> StreamPointer {
    switch consume pointer {
    case .some(let value):
        return value
    case .none:
        let text = message()
        XCTFail(text, file: file, line: line)
        throw CaptureError(.invalidState, text)
    }
}

/// Whether a frame came back (the pointer is released at once).
public func gotFrame(_ pointer: consuming StreamPointer?) -> Bool {
    switch consume pointer {
    case .some: return true
    case .none: return false
    }
}

/// A box that keeps a stream pointer alive, so tests can hold several in an array.
public final class HeldFrame {
    public var pointer: StreamPointer?
    public let info: FrameInfo
    /// How many times its cancel handler ran (when one was registered).
    public let cancelRuns = Counter()
    public private(set) var hasHandler = false

    public init(_ pointer: consuming StreamPointer) {
        info = pointer.info
        self.pointer = Optional(pointer)
    }

    public var index: Int { info.index }
    public var sequence: UInt32 { info.sequence }
    public var isLocked: Bool { pointer?.isLocked ?? false }
    public var isValid: Bool { pointer?.isValid ?? false }

    public func registerCancelHandler() {
        hasHandler = true
        let counter = cancelRuns
        pointer!.onCancel { counter.increment() }
    }

    public func lock() throws(CaptureError) { try pointer!.lock() }
    public func unlock() { pointer!.unlock() }
    public func clone() -> HeldFrame { HeldFrame(pointer!.clone()) }
    public func release() { pointer = nil }

    public func withPayload<R>(_ body: (FramePayload) throws -> R) throws -> R {
        try pointer!.withPayload(body)
    }
}

/// A counter that closures on other threads can bump.
public final class Counter: Sendable {
    public init() {}
    private let count = Atomic<Int>(0)
    public func increment() { count.add(1, ordering: .relaxed) }
    public var value: Int { count.load(ordering: .relaxed) }
}

/// Messages collected from other threads, reported on the test's thread.
public final class ProblemLog: Sendable {
    public init() {}
    private let entries = Locked<[String]>([])
    public func add(_ problem: String) { entries.withLock { $0.append(problem) } }
    public var all: [String] { entries.withLock { $0 } }
}

// MARK: - Errors

/// Runs `body`, expecting it to throw; fails the test when it does not. Returns the error,
/// typed as `body` throws it (`expectError { () throws(V4L2Error) in ... }?.errno`).
public func expectError<Failure: Error, T>(_ body: () throws(Failure) -> T, _ message: @autoclosure () -> String = "",
                                           file: StaticString = #filePath, line: UInt = #line) -> Failure? {
    do {
        let value = try body()
        let note = message()
        XCTFail("expected a \(Failure.self), got \(value)\(note.isEmpty ? "" : ": " + note)", file: file, line: line)
        return nil
    } catch {
        return error
    }
}

// MARK: - Spy allocator

/// Wraps an allocator and records the dispatch steps the pin calls, in order, so a test can
/// check the AVStream order (initialize, allocate..., free..., delete) and that selection never
/// initialized a rejected allocator.
public final class SpyAllocator: AllocatorDispatch {
    public let wrapped: any AllocatorDispatch
    private let calls = Locked<[String]>([])
    private let cpuAccess = Locked<(begin: Int, end: Int)>((0, 0))
    /// Runs at the start of initialize, before the wrapped allocator's (e.g. to inject a fault
    /// into the allocator's own VIDIOC_REQBUFS).
    private let beforeInitialize: (@Sendable () -> Void)?

    public init(_ wrapped: any AllocatorDispatch, beforeInitialize: (@Sendable () -> Void)? = nil) {
        self.wrapped = wrapped
        self.beforeInitialize = beforeInitialize
    }

    public var name: String { "spy of \(wrapped.name)" }
    public var offer: AllocatorOffer { wrapped.offer }
    /// The four dispatch steps in the order they were called.
    public var steps: [String] { calls.withLock { $0 } }
    public var allocateCount: Int { steps.filter { $0 == "allocate" }.count }
    public var freeCount: Int { steps.filter { $0 == "free" }.count }
    public var cpuAccessCalls: (begin: Int, end: Int) { cpuAccess.withLock { $0 } }

    public func initialize(queue: PinQueue, framing: AllocatorFraming, frameCount: Int) throws(CaptureError) -> Int {
        calls.withLock { $0.append("initialize") }
        beforeInitialize?()
        return try wrapped.initialize(queue: queue, framing: framing, frameCount: frameCount)
    }

    public func allocate(index: Int) throws(CaptureError) -> FrameMemory {
        calls.withLock { $0.append("allocate") }
        return try wrapped.allocate(index: index)
    }

    public func free(index: Int, memory: FrameMemory) {
        calls.withLock { $0.append("free") }
        wrapped.free(index: index, memory: memory)
    }

    public func delete() {
        calls.withLock { $0.append("delete") }
        wrapped.delete()
    }

    public func beginCPUAccess(index: Int, memory: FrameMemory) throws(CaptureError) {
        cpuAccess.withLock { $0.begin += 1 }
        try wrapped.beginCPUAccess(index: index, memory: memory)
    }

    public func endCPUAccess(index: Int, memory: FrameMemory) throws(CaptureError) {
        cpuAccess.withLock { $0.end += 1 }
        try wrapped.endCPUAccess(index: index, memory: memory)
    }
}


/// How many descriptors this process has open (entries of /proc/self/fd).
public func processDescriptorCount() -> Int {
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { count += 1 }
    }
    return count - 1 // the directory stream itself
}


/// Open file descriptors and memory mappings of this process, read with read(2) (Foundation
/// reads /proc files short).
public enum ProcessResources {
    public static func openDescriptors() -> Int { processDescriptorCount() }

    /// All lines of /proc/self/maps.
    public static func mappings() -> Int { mapLines().count }

    /// Mappings of device memory: V4L2 buffers (/dev/video*), dmabufs and DRM objects.
    public static func deviceMappings() -> Int {
        // Not shared libraries whose names say drm: libavutil (under framedump's libswscale)
        // brings libdrm and libva-drm into every process that links FrameDump.
        mapLines().filter { $0.contains("/dev/video") || $0.contains("dmabuf") || ($0.contains("drm") && !$0.contains(".so")) }.count
    }

    static func mapLines() -> [Substring] {
        let fd = open("/proc/self/maps", O_RDONLY)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n")
    }
}

extension RawSpan {
    /// A copy of the bytes (for comparisons in tests).
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
}
