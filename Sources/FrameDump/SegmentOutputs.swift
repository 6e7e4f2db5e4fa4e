import FrameBridge
import V4L2

/// The outputs of one segment (one format): the stream of -o with its sink, and the picture
/// sinks (--png-dir, --jpeg-dir). ``init(options:format:outputPath:device:)`` checks what can
/// be checked before anything is written; ``open(framing:frameInterval:standard:standardOutputDescriptor:)``
/// creates them once the pin streams; ``write(_:index:)`` writes one frame to each;
/// ``finish()`` or ``close()`` end them. MJPEG/JPEG frames are decoded with TurboJPEG for y4m
/// and PNG (MJPEGSinks.swift).
final class SegmentOutputs {
    let options: CaptureOptions
    let format: ImageFormat
    /// The -o path of this segment (with -segK after the first), nil without a stream.
    let outputPath: String?
    private let jpegFormat: Bool
    private var png: PNGSink?
    private var mjpegPNG: MJPEGPNGSink?
    private var jpeg: JPEGSink?
    private var sinks: [any FrameSink] = []
    private var decodingSinks: [any DecodingSink] = []
    private(set) var output: FrameOutput?

    /// The sinks for `format`, checked before anything is written.
    init(options: CaptureOptions, format: ImageFormat, outputPath: String?, device: VideoDevice) throws(FrameDumpError) {
        self.options = options
        self.format = format
        self.outputPath = outputPath
        jpegFormat = format.pixelFormat.isJPEG
        if options.outputPath != nil && options.container == .y4m {
            if jpegFormat { try MJPEGY4MSink.check(format) } else { try Y4MConverter.check(format) }
        }
        if let directory = options.pngDirectory {
            if jpegFormat {
                mjpegPNG = try MJPEGPNGSink(directory: directory, every: options.pngEvery, format: format)
            } else {
                png = try PNGSink(directory: directory, every: options.pngEvery, format: format, device: device)
            }
        }
        if let directory = options.jpegDirectory {
            jpeg = try JPEGSink(directory: directory, every: options.pngEvery, format: format)
        }
    }

    /// Creates the stream and the picture directories (the pin streams: now they may be created).
    /// `standard` is the analog standard a y4m header names.
    func open(framing: AllocatorFraming, frameInterval: Fraction?, standard: UInt64?,
              standardOutputDescriptor: Int32) throws(FrameDumpError) {
        if let path = outputPath {
            var capacity = 64
            for item in framing.items { capacity += max(item.frameSizeMaximum, item.frameSizeMinimum) }
            // Direct I/O for raw frames only: a y4m frame starts with its FRAME header.
            let directIO = options.container == .raw ? options.directIO : .off
            let stream: FrameOutput
            if path == "-" {
                stream = FrameOutput.wrapping(descriptor: standardOutputDescriptor, frameCapacity: capacity)
                try stream.enableDirectIO(directIO)
            } else {
                stream = try FrameOutput.create(path: path, frameCapacity: capacity, directIO: directIO)
            }
            output = stream
            switch options.container {
            case .raw:
                sinks.append(RawSink(output: stream))
            case .y4m where jpegFormat:
                // The header waits for the first decoded frame: its chroma tag is the JPEG's.
                let sink = try MJPEGY4MSink(output: stream, format: format, frameInterval: frameInterval,
                                            framesPerSecond: options.format.framesPerSecond)
                sinks.append(sink)
                decodingSinks.append(sink)
            case .y4m:
                let sink = try Y4MSink(output: stream, format: format, frameInterval: frameInterval,
                                       framesPerSecond: options.format.framesPerSecond, standard: standard)
                try sink.writeHeader()
                sinks.append(sink)
            }
        }
        if let png {
            try png.createDirectory()
            sinks.append(png)
        }
        if let mjpegPNG {
            try mjpegPNG.createDirectory()
            sinks.append(mjpegPNG)
            decodingSinks.append(mjpegPNG)
        }
        if let jpeg {
            try jpeg.createDirectory()
            sinks.append(jpeg)
        }
    }

    /// Writes frame `index` to every sink.
    @inline(__always)
    func write(_ payload: borrowing FramePayload, index: Int) throws(FrameDumpError) {
        for sink in sinks {
            try sink.write(payload, index: index)
        }
    }

    /// Whether a decoding sink (MJPEG to PNG or y4m) is among them.
    var decodes: Bool { !decodingSinks.isEmpty }

    /// Frames the decoding sinks could not decode, over all of them.
    var framesNotDecoded: Int {
        var count = 0
        for sink in decodingSinks { count += sink.framesNotDecoded }
        return count
    }

    /// The last error a decoding sink met, if any.
    var lastDecodeError: String? { decodingSinks.compactMap(\.lastDecodeError).last }

    /// PNG and JPEG files written.
    var pngFilesWritten: Int { (png?.filesWritten ?? 0) + (mjpegPNG?.filesWritten ?? 0) }
    var jpegFilesWritten: Int { jpeg?.filesWritten ?? 0 }

    /// After the last frame: finishes the sinks and closes the stream.
    func finish() throws(FrameDumpError) {
        for sink in sinks { try sink.finish() }
        try output?.close()
    }

    /// After a failure: closes the stream, which keeps every whole frame.
    func close() {
        try? output?.close()
    }
}
