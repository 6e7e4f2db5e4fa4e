import ArgumentParser
import FrameDump
import V4L2

struct FramingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "framing",
        abstract: "Show the pin's framing requirements and which allocator selection would choose.",
        discussion: """
        One framing item per plane: memory kinds, frames min/max, frame size min/max, bytes per line, \
        alignment, flags. Then the allocator for --memory (default mmap) and, when it is rejected, the \
        reasons. No allocator is initialized. The format options set the format the framing is for.

        A compressed format (MJPEG) has a frame size range of 0...sizeimage (each frame's size \
        varies) and an output compression: sizeimage over the picture at 16 bits per pixel, an \
        upper bound.
        """
    )

    @OptionGroup var device: DeviceOptions
    @OptionGroup var memory: MemoryArguments
    @OptionGroup var format: FormatArguments

    @Flag(name: .customLong("json"), help: "Print JSON.")
    var json = false

    func run() throws {
        let report = try FrameDumpCommands.framing(path: device.device, backend: device.backend, memory: memory.memory,
                                                   source: memory.dmabufFrom, buffers: memory.buffers, format: format.options)
        printOutput(json ? FrameDumpJSON.encode(report) + "\n" : report.render())
    }
}
