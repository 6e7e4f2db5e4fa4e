import ArgumentParser
import FrameDump

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show capabilities, inputs, formats with sizes and frame intervals, and controls with ranges and values."
    )

    @OptionGroup var device: DeviceOptions

    @Flag(name: .customLong("json"), help: "Print JSON.")
    var json = false

    func run() throws {
        let report = try FrameDumpCommands.info(path: device.device, backend: device.backend)
        printOutput(json ? FrameDumpJSON.encode(report) + "\n" : report.render())
    }
}
