import SystemPackage
import CV4L2
import Synchronization
import V4L2
#if canImport(Glibc)
import Glibc
#endif

/// A ``DeviceBackend`` that answers from in-memory V4L2 capture devices, for tests and benchmarks.
///
/// ## What it simulates
/// Each device registered with ``addDevice(path:configuration:)`` answers the raw ioctls on
/// the real `<linux/videodev2.h>` structs the way a driver built on videobuf2 does (modelled
/// on vivid's webcam input):
/// - QUERYCAP; four inputs (ENUMINPUT, G/S_INPUT: EINVAL out of range, EBUSY while buffers
///   are allocated); ENUM_FMT (YUYV, RGB3, NV12, and two-plane NM12 in multi-planar mode),
///   ENUM_FRAMESIZES, ENUM_FRAMEINTERVALS; G/S/TRY_FMT (single- or multi-planar, sizes
///   snapped to the nearest offered size, bytesperline and sizeimage computed; S_FMT is
///   EBUSY while buffers are allocated); G/S_PARM.
/// - Controls: QUERY_EXT_CTRL (with V4L2_CTRL_FLAG_NEXT_CTRL), QUERYCTRL, QUERYMENU,
///   G/S_CTRL, G/S_EXT_CTRLS with the kernel's validation (integers clamped, menus ERANGE,
///   skipped menu items and unknown ids EINVAL, read-only and write-only EACCES).
/// - The queue: REQBUFS, CREATE_BUFS, QUERYBUF, QBUF, DQBUF, EXPBUF, STREAMON, STREAMOFF
///   with videobuf2's rules: one owning file handle (others get EBUSY), the buffer state
///   machine (dequeued, queued, done), EINVAL for bad types, indexes, memory kinds, states
///   and plane arrays, EBUSY for REQBUFS while streaming, STREAMON deferring frame
///   production until `minimumBuffers` are queued, STREAMOFF returning every buffer,
///   close of the owner freeing the queue, orphaned MMAP buffers staying mapped.
/// - Memory: MMAP planes are memfds, so `mmap`, EXPBUF (a new real descriptor) and
///   mapping the exported descriptor all work with the real system calls; USERPTR frames
///   are written to the user's memory; DMABUF frames are written through a mapping of the
///   dmabuf (any mappable descriptor, for example one exported by another simulated device).
/// - Frames: filled with ``SimulatedPattern`` bytes, sequence numbers from 0 per STREAMON,
///   CLOCK_MONOTONIC timestamps, `V4L2_FIELD_NONE`; on demand or by ``produceFrames(path:count:)``.
/// - A live HDMI input, when ``SimulatedDeviceConfiguration/hdmiSource`` is set (input 3; off by
///   default): ENUMINPUT reports V4L2_IN_ST_NO_SIGNAL while the source has none;
///   QUERY_DV_TIMINGS (the source's timings, ENOLINK without a signal), G/S_DV_TIMINGS (EBUSY
///   while buffers are allocated; the format takes the timings' size, as vivid's does; ENODATA
///   off that input), BT.656/1120 progressive timings at 60 Hz (CEA-861 for 640x480, 1280x720,
///   1920x1080, CVT reduced blanking otherwise); SUBSCRIBE/UNSUBSCRIBE_EVENT for
///   V4L2_EVENT_SOURCE_CHANGE (id: the input) and DQEVENT (ENOENT when none is pending), one
///   pending event per subscription with later changes merged in, as v4l2-event does. Tests
///   change the source with ``changeSource(path:width:height:)`` and ``setSignal(path:present:)``.
/// - poll: POLLIN | POLLRDNORM when a buffer is (or can be made) ready, POLLERR when not
///   streaming or after a fatal error (both only when the queue's events are asked for, as
///   vb2_core_poll), POLLPRI while the handle has an event pending, waiting up to the timeout
///   for another thread to queue, produce or send an event.
/// - Faults (``SimulatedFault``) for tests of a misbehaving driver, and counters for tests
///   of the caller (ioctls issued, buffer states, mappings, open descriptors).
///
/// ## What it does not simulate
/// Blocking I/O (every descriptor behaves as if opened with O_NONBLOCK: DQBUF never waits),
/// read()/write() I/O, output devices beyond the queue rules (nothing is displayed), real
/// frame timing (`timeperframe` is reported, not obeyed), format conversion (the bytes are
/// a pattern, not an image), events other than source changes (control, frame sync, end of
/// stream), requests, selection and cropping, analog standards (the TV and S-Video inputs
/// are listed only), ENUM_DV_TIMINGS and DV_TIMINGS_CAP, interlaced timings, cache-hint flags,
/// and dmabuf fences and synchronization.
///
/// Descriptors it hands out are real, unique numbers (each one an open /dev/null), so they
/// never collide with real descriptors. Calls on descriptors it does not own go to the
/// real system calls, which is how callers map and close dmabuf descriptors. All state is
/// behind one lock; the per-frame calls (QBUF, DQBUF, poll) do not allocate.
public final class SimulatedV4L2Backend: DeviceBackend {
    private let registry = Locked(SimulatedRegistry())

    public init() {}

    /// A backend with one simulated device at `path`.
    public convenience init(path: String, configuration: SimulatedDeviceConfiguration = SimulatedDeviceConfiguration()) {
        self.init()
        addDevice(path: path, configuration: configuration)
    }

    deinit {
        registry.withLock { registry in
            for device in registry.devices {
                device.freeBuffers(registry: registry)
            }
            for descriptor in registry.descriptors {
                Glibc.close(descriptor)
            }
            registry.descriptors.removeAll()
            registry.descriptorDevices.removeAll()
        }
    }

    public var name: String { "simulator" }

    // MARK: - Devices

    /// Registers a simulated V4L2 device at `path`.
    public func addDevice(path: String, configuration: SimulatedDeviceConfiguration = SimulatedDeviceConfiguration()) {
        registry.withLock { registry in
            precondition(registry.device(path: path) == nil, "a simulated device already exists at \(path)")
            registry.devices.append(SimulatedDevice(path: path, configuration: configuration, isV4L2: true))
        }
    }

    /// Registers a file that opens but is not a V4L2 device: every ioctl is ENOTTY.
    public func addNonV4L2File(path: String) {
        registry.withLock { registry in
            precondition(registry.device(path: path) == nil, "a simulated device already exists at \(path)")
            registry.devices.append(SimulatedDevice(path: path, configuration: SimulatedDeviceConfiguration(), isV4L2: false))
        }
    }

    /// The paths of the registered devices and files.
    public var paths: [String] {
        registry.withLock { $0.devices.map(\.path) }
    }

    // MARK: - DeviceBackend

    public func open(path: String, flags: Int32) -> Result<Int32, Errno> {
        registry.withLock { registry -> Result<Int32, Errno> in
            guard let device = registry.device(path: path) else { return .failure(.noSuchFileOrDirectory) }
            if device.disconnected { return .failure(.noSuchDevice) }
            switch SystemCalls.placeholderDescriptor() {
            case .success(let fd):
                registry.descriptors.append(fd)
                registry.descriptorDevices.append(device)
                device.openDescriptors += 1
                return .success(fd)
            case .failure(let errno):
                return .failure(errno)
            }
        }
    }

    public func close(_ descriptor: Int32) -> Errno? {
        registry.withLock { registry in
            if let i = registry.descriptors.firstIndex(of: descriptor) {
                let device = registry.descriptorDevices[i]
                registry.descriptors.remove(at: i)
                registry.descriptorDevices.remove(at: i)
                device.openDescriptors -= 1
                device.dropEventQueue(of: descriptor)
                // vb2_fop_release: the owner's close stops streaming and frees the buffers.
                if device.owner == descriptor {
                    device.freeBuffers(registry: registry)
                    device.owner = -1
                }
            }
            return Glibc.close(descriptor) == 0 ? nil : Errno.current
        }
    }

    public func ioctl(_ descriptor: Int32, request: UInt, argument: UnsafeMutableRawPointer) -> Errno? {
        // The pointer crosses into the lock as an integer: a non-Sendable parameter would
        // merge its region with the lock's.
        let address = UInt(bitPattern: argument)
        let answer: IoctlAnswer = registry.withLock { registry in
            guard let device = registry.device(for: descriptor) else { return .notOurs }
            let argument = UnsafeMutableRawPointer(bitPattern: address)!
            return .answered(device.ioctl(descriptor, request, argument, registry: registry))
        }
        switch answer {
        case .answered(let errno): return errno
        case .notOurs:
            if request == CV4L2_DMA_BUF_IOCTL_SYNC, SystemCalls.isMemfd(descriptor) { return synchronizeExported() }
            return cv4l2_ioctl(descriptor, request, argument) == 0 ? nil : .current
        }
    }

    /// What DMA_BUF_IOCTL_SYNC on an exported buffer answers.
    private struct SyncState {
        var calls = 0
        var failures: [Errno] = []
    }
    private let syncState = Locked(SyncState())

    /// The simulator's exported dmabufs are memfds, which the kernel would refuse
    /// DMA_BUF_IOCTL_SYNC with ENOTTY: the simulator answers it, with the injected failures first.
    private func synchronizeExported() -> Errno? {
        syncState.withLock { state in
            state.calls += 1
            return state.failures.isEmpty ? nil : state.failures.removeFirst()
        }
    }

    /// Makes the next DMA_BUF_IOCTL_SYNC calls on exported buffers fail with these errnos, one each.
    public func injectDMABufSyncFailures(_ errnos: [Errno]) {
        syncState.withLock { $0.failures += errnos }
    }

    /// DMA_BUF_IOCTL_SYNC calls made on exported buffers so far.
    public var dmabufSyncCount: Int { syncState.withLock { $0.calls } }

    public func mmap(_ descriptor: Int32, length: Int, protection: Int32, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno> {
        let answer: MapAnswer = registry.withLock { registry in
            guard let device = registry.device(for: descriptor), device.isV4L2 else { return .notOurs }
            switch device.map(length: length, protection: protection, offset: offset, registry: registry) {
            case .success(let address): return .mapped(UInt(bitPattern: address))
            case .failure(let errno): return .failed(errno)
            }
        }
        switch answer {
        case .mapped(let address): return .success(UnsafeMutableRawPointer(bitPattern: address)!)
        case .failed(let errno): return .failure(errno)
        case .notOurs: return SystemCalls.map(descriptor, length: length, protection: protection, offset: offset)
        }
    }

    public func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Errno? {
        registry.withLock { registry in
            let key = UInt(bitPattern: address)
            if let i = registry.mappings.firstIndex(where: { $0.address == key }) {
                let mapping = registry.mappings[i]
                registry.mappings.swapAt(i, registry.mappings.count - 1)
                registry.mappings.removeLast()
                let device = mapping.device
                if mapping.index < device.buffers.count, device.buffers[mapping.index].serial == mapping.serial {
                    device.buffers[mapping.index].mappings -= 1
                }
            }
            return Glibc.munmap(address, length) == 0 ? nil : Errno.current
        }
    }

    public func poll(_ descriptor: Int32, events: Int16, timeoutMilliseconds: Int32) -> Result<Int16, Errno> {
        switch poll(descriptor, events: events, wakeup: -1, timeoutMilliseconds: timeoutMilliseconds) {
        case .success(let result): return .success(result.revents)
        case .failure(let errno): return .failure(errno)
        }
    }

    /// A simulated device's readiness is computed, not a kernel wait queue: this checks it, and
    /// the wake-up descriptor (a real eventfd; -1 for none), every 200 µs.
    public func poll(_ descriptor: Int32, events: Int16, wakeup: Int32, timeoutMilliseconds: Int32) -> Result<(revents: Int16, woken: Bool), Errno> {
        func woken() -> Bool {
            guard wakeup >= 0 else { return false }
            var entry = pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0)
            return Glibc.poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLIN) != 0
        }
        let deadline = timeoutMilliseconds > 0
            ? SystemCalls.monotonicNanoseconds() + Int64(timeoutMilliseconds) * 1_000_000 : 0
        var first = true
        while true {
            let counts = first
            first = false
            let answer: PollAnswer = registry.withLock { registry in
                guard let device = registry.device(for: descriptor), device.isV4L2 else { return .notOurs }
                if counts { device.polls += 1 }
                switch device.poll(descriptor, events: events) {
                case .ready(let revents): return .ready(revents)
                case .failed(let errno): return .failed(errno)
                case .notReady: return .notReady
                }
            }
            switch answer {
            case .ready(let revents): return .success((revents, woken()))
            case .failed(let errno): return .failure(errno)
            case .notOurs:
                var entries = [pollfd(fd: descriptor, events: events, revents: 0), pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0)]
                let result = Glibc.poll(&entries, wakeup >= 0 ? 2 : 1, timeoutMilliseconds)
                guard result >= 0 else { return .failure(.current) }
                return .success((entries[0].revents, wakeup >= 0 && entries[1].revents & Int16(POLLIN) != 0))
            case .notReady:
                if woken() { return .success((0, true)) }
                if timeoutMilliseconds == 0 { return .success((0, false)) }
                if timeoutMilliseconds > 0 && SystemCalls.monotonicNanoseconds() >= deadline { return .success((0, false)) }
                usleep(200)
            }
        }
    }

    /// Several descriptors at once: simulated devices answer from their queues, real ones
    /// (an eventfd) from the kernel; checked every 200 µs until one is ready or the time is up.
    public func poll(_ entries: UnsafeMutableBufferPointer<pollfd>, timeoutMilliseconds: Int32) -> Result<Int32, Errno> {
        let deadline = timeoutMilliseconds > 0
            ? SystemCalls.monotonicNanoseconds() + Int64(timeoutMilliseconds) * 1_000_000 : 0
        var first = true
        while true {
            var ready: Int32 = 0
            for i in entries.indices {
                entries[i].revents = 0
                let counts = first
                let answer: PollAnswer = registry.withLock { registry in
                    guard let device = registry.device(for: entries[i].fd), device.isV4L2 else { return .notOurs }
                    if counts { device.polls += 1 }
                    switch device.poll(entries[i].fd, events: entries[i].events) {
                    case .ready(let revents): return .ready(revents)
                    case .failed(let errno): return .failed(errno)
                    case .notReady: return .notReady
                    }
                }
                switch answer {
                case .ready(let revents): entries[i].revents = revents
                case .failed(let errno): return .failure(errno)
                case .notReady: break
                case .notOurs:
                    guard entries[i].fd >= 0 else { break }
                    var entry = pollfd(fd: entries[i].fd, events: entries[i].events, revents: 0)
                    if Glibc.poll(&entry, 1, 0) == 1 { entries[i].revents = entry.revents }
                }
                if entries[i].revents != 0 { ready += 1 }
            }
            first = false
            if ready > 0 || timeoutMilliseconds == 0 { return .success(ready) }
            if timeoutMilliseconds > 0 && SystemCalls.monotonicNanoseconds() >= deadline { return .success(0) }
            usleep(200)
        }
    }

    private enum IoctlAnswer {
        case answered(Errno?)
        case notOurs
    }

    private enum MapAnswer {
        case mapped(UInt)
        case failed(Errno)
        case notOurs
    }

    private enum PollAnswer {
        case ready(Int16)
        case failed(Errno)
        case notReady
        case notOurs
    }

    // MARK: - Frames

    /// Fills up to `count` queued buffers of the device at `path`, oldest first, as a driver
    /// does when frames arrive. Returns how many it filled: fewer when not enough buffers are
    /// queued, 0 when the device is not streaming or has not started (too few buffers queued).
    @discardableResult
    public func produceFrames(path: String, count: Int = 1) -> Int {
        registry.withLock { registry in
            guard let device = registry.device(path: path) else { return 0 }
            var produced = 0
            while produced < count && device.produceFrame() { produced += 1 }
            return produced
        }
    }

    // MARK: - The live HDMI input

    /// The source on the HDMI input of the device at `path` (configured with
    /// ``SimulatedDeviceConfiguration/hdmiSource``) now sends `width` x `height` timings, with a
    /// signal: QUERY_DV_TIMINGS answers them, and every handle subscribed to source changes of
    /// input 3 gets a V4L2_EVENT_SOURCE_CHANGE (changes: V4L2_EVENT_SRC_CH_RESOLUTION), seen by
    /// poll as POLLPRI. The receiver keeps its timings (and frames their size) until S_DV_TIMINGS.
    /// Returns false when there is no such device or it has no live HDMI input.
    @discardableResult
    public func changeSource(path: String, width: UInt32, height: UInt32) -> Bool {
        changeLiveSource(path: path) { device in
            device.sourceSize = SimulatedFrameSize(width: width, height: height)
            device.hasSignal = true
        }
    }

    /// The signal on the HDMI input of the device at `path` goes (QUERY_DV_TIMINGS is ENOLINK,
    /// ENUMINPUT says V4L2_IN_ST_NO_SIGNAL) or comes back with the source's last timings; either
    /// way subscribed handles get a source-change event, as vivid sends one. Returns false when
    /// there is no such device or it has no live HDMI input.
    @discardableResult
    public func setSignal(path: String, present: Bool) -> Bool {
        changeLiveSource(path: path) { $0.hasSignal = present }
    }

    /// Applies `change` to the live HDMI source of the device at `path` and sends its
    /// source-change event; false when there is no such device or input.
    private func changeLiveSource(path: String, _ change: (SimulatedDevice) -> Void) -> Bool {
        registry.withLock { registry in
            guard let device = registry.device(path: path), device.hasLiveHDMI else { return false }
            change(device)
            device.queueSourceChange(input: SimulatedDevice.hdmiInput, changes: SimulatedDevice.resolutionChange)
            return true
        }
    }

    /// Source-change events pending for handles of the device at `path` (for tests of the caller).
    public func pendingEventCount(path: String) -> Int {
        registry.withLock { registry in
            guard let device = registry.device(path: path) else { return 0 }
            return device.eventQueues.reduce(0) { $0 + $1.subscriptions.filter(\.pending).count }
        }
    }

    /// Event subscriptions of the handles of the device at `path`.
    public func subscriptionCount(path: String) -> Int {
        registry.withLock { $0.device(path: path)?.eventQueues.reduce(0) { $0 + $1.subscriptions.count } ?? 0 }
    }

    // MARK: - Faults

    /// Adds a fault to the queue of the device at `path`. Returns false when there is no such device.
    @discardableResult
    public func injectFault(_ fault: SimulatedFault, path: String) -> Bool {
        registry.withLock { registry in
            guard let device = registry.device(path: path) else { return false }
            device.faults.append(fault)
            return true
        }
    }

    /// The faults still waiting for a call to apply to.
    public func pendingFaults(path: String) -> [SimulatedFault] {
        registry.withLock { $0.device(path: path)?.faults ?? [] }
    }

    /// Drops the pending faults (not their effects: a disconnected device stays disconnected).
    public func clearFaults(path: String) {
        registry.withLock { $0.device(path: path)?.faults.removeAll(keepingCapacity: true) }
    }

    // MARK: - Introspection

    /// The queue of the device at `path`, or nil when there is no such device.
    public func queueState(path: String) -> SimulatedQueueState? {
        registry.withLock { registry in
            guard let device = registry.device(path: path) else { return nil }
            return SimulatedQueueState(device)
        }
    }

    /// How many times `request` was issued on the device at `path` (failed calls included).
    public func ioctlCount(path: String, request: UInt) -> Int {
        registry.withLock { $0.device(path: path)?.count(of: request) ?? 0 }
    }

    /// Every request issued on the device at `path`, by `VIDIOC_*` name, with its count.
    public func ioctlCounts(path: String) -> [String: Int] {
        registry.withLock { registry in
            var counts: [String: Int] = [:]
            for entry in registry.device(path: path)?.requestCounts ?? [] {
                counts[ioctlName(entry.request)] = entry.count
            }
            return counts
        }
    }

    /// How many times poll was called on descriptors of the device at `path`.
    public func pollCount(path: String) -> Int {
        registry.withLock { $0.device(path: path)?.polls ?? 0 }
    }

    /// Sets the ioctl and poll counters of the device at `path` back to zero.
    public func resetCounters(path: String) {
        registry.withLock { registry in
            guard let device = registry.device(path: path) else { return }
            device.requestCounts.removeAll(keepingCapacity: true)
            device.polls = 0
        }
    }

    /// Mappings made by ``mmap(_:length:protection:offset:)`` of simulated buffers and not yet unmapped.
    public var liveMappingCount: Int {
        registry.withLock { $0.mappings.count }
    }

    /// The simulator's own mappings (of MMAP planes to fill them, of queued dmabufs).
    /// Zero once every queue is freed.
    public var internalMappingCount: Int {
        registry.withLock { $0.internalMappings }
    }

    /// Descriptors handed out by ``open(path:flags:)`` and not yet closed, over all devices.
    public var openDescriptorCount: Int {
        registry.withLock { $0.descriptors.count }
    }

    /// Descriptors of the device at `path` that are open.
    public func openDescriptorCount(path: String) -> Int {
        registry.withLock { $0.device(path: path)?.openDescriptors ?? 0 }
    }

    /// The current value of a control, or nil when there is no such device or control.
    public func controlValue(path: String, id: UInt32) -> Int64? {
        registry.withLock { registry in
            guard let device = registry.device(path: path),
                  let index = device.controls.firstIndex(where: { $0.id == id }) else { return nil }
            return device.currentValue(index)
        }
    }

    /// How many times a button control was pressed.
    public func buttonPressCount(path: String, id: UInt32) -> Int {
        registry.withLock { registry in
            registry.device(path: path)?.controls.first { $0.id == id }?.presses ?? 0
        }
    }
}

/// A snapshot of a simulated device's queue, for tests.
public struct SimulatedQueueState: Sendable, Hashable {
    /// Buffers allocated by REQBUFS and CREATE_BUFS.
    public var bufferCount: Int
    /// Their memory kind, or nil when none are allocated.
    public var memory: MemoryKind?
    /// Buffers the application owns, in index order.
    public var dequeuedIndexes: [UInt32]
    /// Buffers queued and waiting for a frame, in the order they will be filled.
    public var queuedIndexes: [UInt32]
    /// Buffers filled and waiting for DQBUF, in the order DQBUF returns them.
    public var filledIndexes: [UInt32]
    /// Buffers with at least one live mapping.
    public var mappedIndexes: [UInt32]
    public var isStreaming: Bool
    /// Streaming with enough buffers queued: frames are produced.
    public var isProducing: Bool
    /// videobuf2's error state (after ``SimulatedFault/fatalError``).
    public var hasFatalError: Bool
    public var isDisconnected: Bool
    /// The sequence number the next frame gets.
    public var nextSequence: UInt32
    /// Frames filled since the device was added.
    public var framesProduced: Int
    /// The descriptor that owns the queue.
    public var owner: Int32?
    /// The selected input.
    public var input: UInt32
    /// The current format.
    public var format: ImageFormat

    public var dequeuedCount: Int { dequeuedIndexes.count }
    public var queuedCount: Int { queuedIndexes.count }
    public var filledCount: Int { filledIndexes.count }

    init(_ device: SimulatedDevice) {
        bufferCount = device.buffers.count
        memory = device.buffers.isEmpty ? nil : MemoryKind(rawValue: device.memory)
        dequeuedIndexes = device.buffers.indices.filter { device.buffers[$0].state == .dequeued }.map { UInt32($0) }
        queuedIndexes = device.queued.elements.map { UInt32($0) }
        filledIndexes = device.done.elements.map { UInt32($0) }
        mappedIndexes = device.buffers.indices.filter { device.buffers[$0].mappings > 0 }.map { UInt32($0) }
        isStreaming = device.streaming
        isProducing = device.streaming && device.started
        hasFatalError = device.fatal
        isDisconnected = device.disconnected
        nextSequence = device.nextSequence
        framesProduced = device.framesProduced
        owner = device.owner >= 0 ? device.owner : nil
        input = device.input
        let current = device.format
        format = ImageFormat(bufferType: device.configuration.bufferType, width: current.width, height: current.height,
                             pixelFormat: current.pixelFormat.fourcc, field: SimulatedDevice.fieldNone,
                             colorspace: SimulatedDevice.colorspaceSRGB, planes: current.planes)
    }
}
