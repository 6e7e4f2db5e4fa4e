import ArgumentParser
import FrameDump

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show capabilities, inputs, formats with sizes and frame intervals, and controls with ranges and values.",
        discussion: """
        Each input shows its status flags (no signal, no power, ...); the current input shows its DV \
        timings or analog standard, what the device detects from the source, and the presets it \
        offers. Compressed formats (MJPEG, H264, ...) are marked compressed. A memory-to-memory \
        device shows its role (encoder, decoder or converter) and both queues, OUTPUT and \
        CAPTURE, with their formats and the encoder controls it has.
        """
    )

    @OptionGroup var device: DeviceOptions

    @Flag(name: .customLong("json"), help: "Print JSON.")
    var json = false

    func run() throws {
        let report = try FrameDumpCommands.info(path: device.device, backend: device.backend)
        printOutput(json ? FrameDumpJSON.encode(report) + "\n" : report.render())
    }
}
