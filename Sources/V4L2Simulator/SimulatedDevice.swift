import SystemPackage
import CV4L2
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// The state shared by every simulated device of a backend. Only touched under the backend's lock.
/// Unchecked: only ever touched under the backend's lock.
final class SimulatedRegistry: @unchecked Sendable {
    var devices: [SimulatedDevice] = []
    var descriptors: [Int32] = []
    var descriptorDevices: [SimulatedDevice] = []
    var mappings: [SimulatedMapping] = []
    var internalMappings = 0
    var nextSerial: UInt64 = 1

    init() {
        descriptors.reserveCapacity(16)
        descriptorDevices.reserveCapacity(16)
        mappings.reserveCapacity(64)
    }

    /// The device a descriptor belongs to, by a linear search of a small array.
    @inline(__always)
    func device(for descriptor: Int32) -> SimulatedDevice? {
        var i = 0
        let count = descriptors.count
        while i < count {
            if descriptors[i] == descriptor { return descriptorDevices[i] }
            i += 1
        }
        return nil
    }

    func device(path: String) -> SimulatedDevice? {
        devices.first { $0.path == path }
    }
}

/// One simulated device node and its videobuf2-like queue. Only touched under the backend's lock.
final class SimulatedDevice {
    let path: String
    let configuration: SimulatedDeviceConfiguration
    let isV4L2: Bool

    // Hot configuration values, copied out of `configuration`.
    let queueType: UInt32
    let isCapture: Bool
    let isMultiplanar: Bool
    let producesOnDemand: Bool
    let fillsPayload: Bool
    let minimumBuffers: Int
    let maximumBuffers: Int
    let dataOffset: UInt32
    let pixelFormats: [SimulatedPixelFormat]
    let bufferCapabilities: UInt32

    // Device state.
    var disconnected = false
    var input: UInt32 = 0
    var format: SimulatedFormat
    var timePerFrame: Fraction
    var controls: [SimulatedControl]
    var openDescriptors = 0

    // The live HDMI input (``SimulatedDeviceConfiguration/hdmiSource``).
    /// The size of the timings the source sends (QUERY_DV_TIMINGS), and whether it sends any.
    var sourceSize: SimulatedFrameSize
    var hasSignal: Bool
    /// The size of the timings the receiver is set to (G/S_DV_TIMINGS): the format's size on that input.
    var dvTimingsSize: SimulatedFrameSize
    /// The event subscriptions and pending events of each file handle that subscribed.
    var eventQueues: [SimulatedEventQueue] = []

    // Queue state.
    var owner: Int32 = -1
    var memory: UInt32 = 0
    var buffers: [SimulatedBuffer] = []
    var queued: IndexRing
    var done: IndexRing
    var streaming = false
    /// Streaming and enough buffers were queued: the driver produces frames.
    var started = false
    /// videobuf2's `q->error`.
    var fatal = false
    var nextSequence: UInt32 = 0
    var lastTimestamp: Int64 = 0
    var framesProduced = 0
    var polls = 0
    var lastDequeuedIndex = -1

    // Faults and statistics.
    var faults: [SimulatedFault] = []
    /// Enumeration ioctls that never answer EINVAL (``SimulatedFault/endlessEnumeration(request:)``).
    var endlessEnumerations: [UInt] = []
    /// The JPEG pictures of the current MJPEG format, encoded at the first frame.
    var jpegFrames: SimulatedJPEGFrames?
    /// Pictures of another subsampling, for the `jpegSubsampling` fault.
    var otherJPEGFrames: SimulatedJPEGFrames?
    var requestCounts: [(request: UInt, count: Int)] = []

    static let timestampMonotonic: UInt32 = 0x0000_2000
    static let fieldNone: UInt32 = 1
    static let colorspaceSRGB: UInt32 = 8

    init(path: String, configuration: SimulatedDeviceConfiguration, isV4L2: Bool) {
        self.path = path
        self.configuration = configuration
        self.isV4L2 = isV4L2
        queueType = configuration.bufferType.rawValue
        isCapture = configuration.canCapture
        isMultiplanar = configuration.multiplanar
        producesOnDemand = configuration.production == .onDemand
        fillsPayload = configuration.fillsPayload
        maximumBuffers = Int(min(max(configuration.maximumBuffers, 1), 32))
        minimumBuffers = min(Int(max(configuration.minimumBuffers, 1)), maximumBuffers)
        dataOffset = configuration.multiplanar ? configuration.dataOffset : 0
        pixelFormats = SimulatedPixelFormat.formats(multiplanar: configuration.multiplanar,
                                                    mjpeg: configuration.mjpeg != nil && !configuration.multiplanar)
        var capabilities: UInt32 = 0x10 // V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS
        for kind in configuration.memoryKinds {
            switch kind {
            case .mmap: capabilities |= 0x1
            case .userPointer: capabilities |= 0x2
            case .dmabuf: capabilities |= 0x4
            }
        }
        bufferCapabilities = capabilities
        timePerFrame = configuration.frameIntervals.first ?? Fraction(1, 30)
        controls = SimulatedControl.standardSet(minimumBuffers: UInt32(min(Int(max(configuration.minimumBuffers, 1)), 32)))
        queued = IndexRing(capacity: 32)
        done = IndexRing(capacity: 32)
        buffers.reserveCapacity(32)
        faults.reserveCapacity(16)
        requestCounts.reserveCapacity(48)
        let source = configuration.hdmiSource ?? SimulatedHDMISource()
        sourceSize = SimulatedFrameSize(width: source.width, height: source.height)
        hasSignal = source.hasSignal
        dvTimingsSize = sourceSize
        eventQueues.reserveCapacity(4)
        format = SimulatedFormat(pixelFormat: .yuyv, width: 0, height: 0, planes: [])
        format = negotiate(fourcc: configuration.initialPixelFormat.rawValue,
                           width: configuration.initialWidth, height: configuration.initialHeight)
    }

    // MARK: - Counting

    /// Counts `request`. A linear list kept in frequency order: an entry that has come to
    /// outnumber the one before it moves one place forward, so the per-frame requests (QBUF,
    /// DQBUF) settle at the front. Otherwise
    /// their cost would depend on how many other requests a caller made first, which made the
    /// same QBUF dearer for the pin (set up through many ioctls) than for a bare benchmark loop.
    @inline(__always)
    func count(_ request: UInt) {
        var i = 0
        let n = requestCounts.count
        while i < n {
            if requestCounts[i].request == request {
                requestCounts[i].count += 1
                if i > 0 && requestCounts[i].count > requestCounts[i - 1].count { requestCounts.swapAt(i, i - 1) }
                return
            }
            i += 1
        }
        requestCounts.append((request, 1))
    }

    func count(of request: UInt) -> Int {
        requestCounts.first { $0.request == request }?.count ?? 0
    }

    // MARK: - Faults

    /// Applies the first pending call fault that fits this call. Returns the errno the call
    /// must fail with, or nil to go on (possibly in the error state `fatalError` set).
    /// `request` is nil for poll and mmap; mmap (`interruptible` false) only sees `disconnect`.
    func applyCallFault(request: UInt?, framePath: Bool, interruptible: Bool = true) -> Errno? {
        var i = 0
        while i < faults.count {
            switch faults[i] {
            case .interrupted(let count) where interruptible:
                if count > 1 { faults[i] = .interrupted(count - 1) } else { faults.remove(at: i) }
                if count >= 1 { return .interrupted }
            case .disconnect:
                faults.remove(at: i)
                disconnected = true
                return .noSuchDevice
            case .fatalError where framePath:
                faults.remove(at: i)
                fatal = true
                return nil
            case .failNext(let failing, let errno) where request == failing:
                faults.remove(at: i)
                return errno
            case .failAfter(let failing, let successes, let errno) where request == failing:
                if successes > 0 {
                    faults[i] = .failAfter(request: failing, successes: successes - 1, errno: errno)
                    i += 1
                    continue
                }
                faults.remove(at: i)
                return errno
            case .endlessEnumeration(let enumeration) where request == enumeration:
                faults.remove(at: i)
                if !endlessEnumerations.contains(enumeration) { endlessEnumerations.append(enumeration) }
            default:
                i += 1
            }
        }
        return nil
    }

    /// Takes the first pending EAGAIN fault.
    func takeWouldBlock() -> Bool {
        var i = 0
        while i < faults.count {
            if case .wouldBlock(let count) = faults[i] {
                if count > 1 { faults[i] = .wouldBlock(count - 1) } else { faults.remove(at: i) }
                if count >= 1 { return true }
            } else {
                i += 1
            }
        }
        return false
    }

    /// What a frame fault does to the next frame.
    struct FrameFault {
        var skip: UInt32 = 0
        var error = false
        /// An MJPEG fault (truncatedJPEG, missingSOI, undecodableJPEG, jpegSubsampling).
        var jpeg: SimulatedFault?
    }

    /// Takes the first pending frame fault. MJPEG faults stay pending on other formats.
    func takeFrameFault() -> FrameFault {
        for i in faults.indices {
            switch faults[i] {
            case .dropFrames(let count):
                faults.remove(at: i)
                return FrameFault(skip: UInt32(clamping: max(count, 0)))
            case .errorFlag:
                faults.remove(at: i)
                return FrameFault(error: true)
            case .truncatedJPEG, .missingSOI, .undecodableJPEG, .jpegSubsampling:
                guard format.pixelFormat.isCompressed else { continue }
                return FrameFault(jpeg: faults.remove(at: i))
            default:
                continue
            }
        }
        return FrameFault()
    }

    /// Takes the first pending result fault that can apply to the buffer just dequeued.
    func takeResultFault(dequeuedIndex: Int) -> (fault: SimulatedFault, reportedIndex: Int)? {
        for i in faults.indices {
            switch faults[i] {
            case .outOfRangeIndex:
                faults.remove(at: i)
                return (.outOfRangeIndex, buffers.count)
            case .indexNotQueued:
                // An index the application holds: the previous DQBUF's, else any other dequeued one.
                var candidate = -1
                if lastDequeuedIndex >= 0, lastDequeuedIndex != dequeuedIndex, lastDequeuedIndex < buffers.count,
                   buffers[lastDequeuedIndex].state == .dequeued {
                    candidate = lastDequeuedIndex
                } else if let other = buffers.indices.first(where: { $0 != dequeuedIndex && buffers[$0].state == .dequeued }) {
                    candidate = other
                }
                guard candidate >= 0 else { continue }
                faults.remove(at: i)
                return (.indexNotQueued, candidate)
            case .bytesUsedOverLength:
                faults.remove(at: i)
                return (.bytesUsedOverLength, dequeuedIndex)
            case .bytesUsedZero:
                faults.remove(at: i)
                return (.bytesUsedZero, dequeuedIndex)
            case .shortPayload:
                let fault = faults.remove(at: i)
                return (fault, dequeuedIndex)
            case .dataOffsetNotBelowBytesUsed where isMultiplanar:
                faults.remove(at: i)
                return (.dataOffsetNotBelowBytesUsed, dequeuedIndex)
            default:
                continue
            }
        }
        return nil
    }

    // MARK: - Frames

    /// Fills the oldest queued buffer, if the device is producing. Returns whether it did.
    @discardableResult
    func produceFrame() -> Bool {
        guard streaming, started, !fatal, !disconnected, let index = queued.removeFirst() else { return false }
        var sequence = nextSequence
        var hasError = false
        var jpegFault: SimulatedFault?
        if !faults.isEmpty {
            let fault = takeFrameFault()
            sequence &+= fault.skip
            hasError = fault.error
            jpegFault = fault.jpeg
        }
        nextSequence = sequence &+ 1
        var now = SystemCalls.monotonicNanoseconds()
        if now <= lastTimestamp { now = lastTimestamp + 1000 }
        lastTimestamp = now

        buffers[index].sequence = sequence
        buffers[index].timestampNanoseconds = now
        buffers[index].field = SimulatedDevice.fieldNone
        buffers[index].hasError = hasError
        let planeCount = buffers[index].planes.count
        if isCapture && format.pixelFormat.isCompressed {
            produceJPEG(buffer: index, sequence: sequence, fault: jpegFault)
        } else {
            for p in 0..<planeCount {
                if isCapture {
                    let bytesUsed = format.planes[p].sizeImage
                    buffers[index].planes[p].bytesUsed = bytesUsed
                    buffers[index].planes[p].dataOffset = p == 0 ? dataOffset : 0
                    if fillsPayload, let address = address(ofPlane: p, buffer: index) {
                        let available = Int(buffers[index].planes[p].length)
                        SimulatedPattern.fill(address, count: min(Int(bytesUsed), available), sequence: sequence, plane: p)
                    }
                }
            }
        }
        buffers[index].state = .done
        done.append(index)
        framesProduced += 1
        return true
    }

    /// Fills buffer `index` with JPEG picture `sequence % variants` (and the configured padding),
    /// damaged as `fault` says. bytesused is the picture's size, cut to the buffer's length.
    func produceJPEG(buffer index: Int, sequence: UInt32, fault: SimulatedFault?) {
        let settings = configuration.mjpeg ?? SimulatedMJPEG()
        buffers[index].planes[0].dataOffset = 0
        let available = Int(buffers[index].planes[0].length)
        var subsampling = settings.subsampling
        if case .jpegSubsampling(let other) = fault { subsampling = other }
        let frames = jpegPictures(subsampling: subsampling, settings: settings)
        let picture = frames.isEmpty ? [] : frames[Int(sequence) % frames.count]
        var used = min(picture.count + settings.trailingPadding, available)
        guard let address = address(ofPlane: 0, buffer: index) else {
            buffers[index].planes[0].bytesUsed = UInt32(used)
            return
        }
        let bytes = address.assumingMemoryBound(to: UInt8.self)
        picture.withUnsafeBufferPointer { source in
            bytes.update(from: source.baseAddress!, count: min(source.count, available))
        }
        if used > picture.count { (bytes + picture.count).initialize(repeating: 0, count: used - picture.count) }
        switch fault {
        case .truncatedJPEG?:
            used = min(picture.count / 2, used)
        case .missingSOI?:
            if used >= 2 { bytes[0] = 0; bytes[1] = 0 }
        case .undecodableJPEG?:
            used = min(64, available)
            bytes.initialize(repeating: 0, count: used)
            if used >= 4 {
                bytes[0] = 0xFF; bytes[1] = 0xD8
                bytes[used - 2] = 0xFF; bytes[used - 1] = 0xD9
            }
        default:
            break
        }
        buffers[index].planes[0].bytesUsed = UInt32(used)
    }

    /// The encoded pictures for the current size and `subsampling` (encoded on first use).
    func jpegPictures(subsampling: Int32, settings: SimulatedMJPEG) -> [[UInt8]] {
        func matches(_ cache: SimulatedJPEGFrames?) -> Bool {
            cache.map { $0.width == format.width && $0.height == format.height && $0.subsampling == subsampling } ?? false
        }
        if matches(jpegFrames) { return jpegFrames!.frames }
        if matches(otherJPEGFrames) { return otherJPEGFrames!.frames }
        let frames = (0..<settings.variants).compactMap {
            SimulatedJPEG.encode(width: Int(format.width), height: Int(format.height), variant: $0,
                                 subsampling: subsampling, quality: settings.quality)
        }
        let made = SimulatedJPEGFrames(width: format.width, height: format.height, subsampling: subsampling, frames: frames)
        if subsampling == settings.subsampling { jpegFrames = made } else { otherJPEGFrames = made }
        return frames
    }

    /// Where the simulator writes plane `plane` of buffer `index`.
    @inline(__always)
    func address(ofPlane plane: Int, buffer index: Int) -> UnsafeMutableRawPointer? {
        switch memory {
        case MemoryKind.mmap.rawValue: return buffers[index].planes[plane].fillAddress
        case MemoryKind.userPointer.rawValue: return UnsafeMutableRawPointer(bitPattern: buffers[index].planes[plane].userPointer)
        case MemoryKind.dmabuf.rawValue: return buffers[index].planes[plane].dmabufMapping
        default: return nil
        }
    }

    // MARK: - poll

    enum PollAnswer {
        case ready(Int16)
        case notReady
        case failed(Errno)
    }

    /// vb2_fop_poll: the queue's readiness when `events` asks for it (POLLERR when not streaming),
    /// and POLLPRI while handle `fd` has an event pending (v4l2_event_pending).
    func poll(_ fd: Int32, events: Int16) -> PollAnswer {
        let always = Int16(POLLERR | POLLHUP | POLLNVAL)
        if !disconnected && !faults.isEmpty, let errno = applyCallFault(request: nil, framePath: true) {
            if errno != .noSuchDevice { return .failed(errno) }
        }
        if disconnected {
            // What v4l2_poll returns for an unregistered device.
            let mask = Int16(POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM | POLLERR | POLLHUP | POLLPRI)
            return .ready(mask & (events | always))
        }
        let priority = !eventQueues.isEmpty && hasPendingEvent(fd) ? Int16(POLLPRI) : 0
        let readable = isCapture ? Int16(POLLIN | POLLRDNORM) : Int16(POLLOUT | POLLWRNORM)
        var queue: Int16 = 0
        // vb2_core_poll looks at the queue only for the events of its direction.
        if events & readable != 0 {
            if !streaming || fatal {
                queue = Int16(POLLERR)
            } else if !done.isEmpty || (producesOnDemand && produceFrame()) {
                queue = readable
            }
        }
        let revents = (queue | priority) & (events | always)
        return revents != 0 ? .ready(revents) : .notReady
    }

    // MARK: - mmap

    func map(length: Int, protection: Int32, offset: Int64, registry: SimulatedRegistry) -> Result<UnsafeMutableRawPointer, Errno> {
        if !faults.isEmpty, let errno = applyCallFault(request: nil, framePath: false, interruptible: false) {
            return .failure(errno)
        }
        if disconnected { return .failure(.noSuchDevice) }
        guard memory == MemoryKind.mmap.rawValue, length > 0, offset >= 0,
              offset % Int64(SystemCalls.pageSize) == 0 else { return .failure(.invalidArgument) }
        let slot = Int(offset / Int64(SystemCalls.pageSize))
        let index = slot / 8
        let plane = slot % 8
        guard index < buffers.count, plane < buffers[index].planes.count else { return .failure(.invalidArgument) }
        let memfd = buffers[index].planes[plane].memfd
        guard SystemCalls.pageAligned(length) <= buffers[index].planes[plane].allocatedLength else {
            return .failure(.invalidArgument)
        }
        // videobuf2 wants a readable mapping of a capture buffer, a writable one of an output buffer.
        guard protection & (isCapture ? PROT_READ : PROT_WRITE) != 0 else { return .failure(.invalidArgument) }
        switch SystemCalls.map(memfd, length: length, protection: protection) {
        case .success(let address):
            buffers[index].mappings += 1
            registry.mappings.append(SimulatedMapping(address: UInt(bitPattern: address), length: length, device: self,
                                                      serial: buffers[index].serial, index: index))
            return .success(address)
        case .failure(let errno):
            return .failure(errno)
        }
    }

    // MARK: - Buffers

    /// Frees every buffer (REQBUFS 0, close of the owner): videobuf2's `__vb2_queue_free`.
    /// Mappings the application still has stay valid (orphaned buffers).
    func freeBuffers(registry: SimulatedRegistry) {
        cancel()
        for buffer in buffers {
            for plane in buffer.planes {
                if let address = plane.fillAddress {
                    Glibc.munmap(address, plane.allocatedLength)
                    registry.internalMappings -= 1
                }
                if plane.memfd >= 0 { Glibc.close(plane.memfd) }
                if let address = plane.dmabufMapping {
                    Glibc.munmap(address, plane.dmabufMappingLength)
                    registry.internalMappings -= 1
                }
            }
        }
        buffers.removeAll(keepingCapacity: true)
        memory = 0
        lastDequeuedIndex = -1
    }

    /// Stops streaming and takes every buffer back: videobuf2's `__vb2_queue_cancel`.
    func cancel() {
        streaming = false
        started = false
        fatal = false
        for i in buffers.indices where buffers[i].state != .dequeued {
            buffers[i].state = .dequeued
        }
        queued.removeAll()
        done.removeAll()
    }

    /// Allocates `count` buffers with planes of `sizes`, for `memory`. Returns how many it made.
    func allocate(count: Int, sizes: [UInt32], memory: UInt32, registry: SimulatedRegistry) -> Result<Int, Errno> {
        var made = 0
        while made < count {
            let index = buffers.count
            var planes: [SimulatedPlane] = []
            var failure: Errno?
            for (p, size) in sizes.enumerated() {
                var plane = SimulatedPlane(minimumLength: size, length: size,
                                           mapOffset: UInt32((index * 8 + p) * SystemCalls.pageSize))
                if memory == MemoryKind.mmap.rawValue {
                    let length = SystemCalls.pageAligned(Int(size))
                    switch SystemCalls.anonymousMemory(length: length) {
                    case .success(let fd):
                        plane.memfd = fd
                        plane.allocatedLength = length
                        switch SystemCalls.map(fd, length: length, protection: PROT_READ | PROT_WRITE) {
                        case .success(let address):
                            plane.fillAddress = address
                            registry.internalMappings += 1
                        case .failure(let errno):
                            failure = errno
                        }
                    case .failure(let errno):
                        failure = errno
                    }
                }
                planes.append(plane)
                if failure != nil { break }
            }
            if let failure {
                for plane in planes {
                    if let address = plane.fillAddress {
                        Glibc.munmap(address, plane.allocatedLength)
                        registry.internalMappings -= 1
                    }
                    if plane.memfd >= 0 { Glibc.close(plane.memfd) }
                }
                if made == 0 { return .failure(failure == .interrupted ? .noMemory : failure) }
                break
            }
            buffers.append(SimulatedBuffer(planes: planes, serial: registry.nextSerial))
            registry.nextSerial += 1
            made += 1
        }
        self.memory = memory
        return .success(made)
    }

    // MARK: - Formats

    /// The format a driver would choose for a request (TRY_FMT).
    func negotiate(fourcc: UInt32, width: UInt32, height: UInt32) -> SimulatedFormat {
        let pixelFormat = pixelFormats.first { $0.fourcc.rawValue == fourcc } ?? pixelFormats[0]
        // As vivid: on a live input the size is the source's (the timings set), whatever is asked.
        let size = isLiveHDMI ? dvTimingsSize : configuration.frameSizes.nearest(width: width, height: height)
        let width = max(size.width & ~1, 2)
        let height = pixelFormat.isVerticallySubsampled ? max(size.height & ~1, 2) : max(size.height, 1)
        return SimulatedFormat(pixelFormat: pixelFormat, width: width, height: height,
                               planes: pixelFormat.planes(width: width, height: height, dataOffset: dataOffset,
                                                          maximumFrameSize: configuration.mjpeg?.maximumFrameSize))
    }
}
