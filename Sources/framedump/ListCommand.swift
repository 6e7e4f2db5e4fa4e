import ArgumentParser
import FrameDump
import V4L2

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List every /dev/video* with card, driver, bus info and whether it can capture.",
        discussion: """
        A node that only captures metadata (uvcvideo's second node: format UVCH, the payload \
        headers) is named as such, and so is a memory-to-memory device (a codec, scaler or \
        converter): encoder, decoder or converter, with the formats of its OUTPUT queue (what it \
        takes) and of its CAPTURE queue (what it gives). No buffers are allocated.
        """
    )

    @Flag(name: .customLong("json"), help: "Print JSON.")
    var json = false

    @Flag(name: .customLong("libv4l2"), help: "Open the devices through libv4l2.")
    var libv4l2 = false

    func run() throws {
        let entries = FrameDumpCommands.list(backend: libv4l2 ? LibV4L2Backend.shared : KernelBackend.shared)
        printOutput(json ? FrameDumpJSON.encode(entries) + "\n" : DeviceListing.render(entries))
    }
}
