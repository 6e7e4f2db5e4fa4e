import V4L2

/// The segments of one device's capture: a source change the capture follows (a new format)
/// ends one segment and starts the next, in a file of its own (-o FILE, then FILE-seg1, ...).
/// It keeps the summaries of the segments before the current one and what they wrote in total.
struct SegmentLog {
    /// The -o the user gave (segment 0's path), nil without a stream.
    let baseOutputPath: String?
    /// The segments before the current one.
    private(set) var earlier: [SegmentSummary] = []
    /// Frames, bytes and files of the segments before the current one.
    private(set) var framesBefore = 0
    private(set) var bytesBefore = 0
    private(set) var framesDirectBefore = 0
    private(set) var framesBufferedBefore = 0
    private(set) var pngFilesBefore = 0
    private(set) var jpegFilesBefore = 0

    init(baseOutputPath: String?) {
        self.baseOutputPath = baseOutputPath
    }

    /// The -o path of the current segment.
    var currentOutputPath: String? { baseOutputPath.map { Self.path($0, earlier.count) } }

    /// The summary of the current segment, in `format`, after `framesWritten` frames in all.
    func current(format: ImageFormat, outputPath: String?, framesWritten: Int, output: FrameOutput?) -> SegmentSummary {
        SegmentSummary(output: outputPath, width: format.width, height: format.height, pixelFormat: format.pixelFormat.description,
                       field: FieldOrder.name(format.field), framesWritten: framesWritten - framesBefore,
                       bytesWritten: output?.committedBytes ?? 0)
    }

    /// Closes the books on the current segment (its outputs finished): the next one starts.
    mutating func endSegment(_ summary: SegmentSummary, framesWritten: Int, outputs: SegmentOutputs?) {
        earlier.append(summary)
        framesBefore = framesWritten
        bytesBefore += outputs?.output?.committedBytes ?? 0
        framesDirectBefore += outputs?.output?.framesDirect ?? 0
        framesBufferedBefore += outputs?.output?.framesBuffered ?? 0
        pngFilesBefore += outputs?.pngFilesWritten ?? 0
        jpegFilesBefore += outputs?.jpegFilesWritten ?? 0
    }

    /// The path of segment `k` (0 is -o itself): `-segK` before the extension.
    static func path(_ path: String, _ k: Int) -> String {
        guard k > 0 else { return path }
        let slash = path.lastIndex(of: "/")
        let name = slash.map { path[path.index(after: $0)...] } ?? path[...]
        if let dot = name.lastIndex(of: "."), dot != name.startIndex {
            return String(path[..<dot]) + "-seg\(k)" + String(path[dot...])
        }
        return path + "-seg\(k)"
    }
}
