import ArgumentParser

struct Framedump: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "framedump",
        abstract: "Capture video from V4L2 devices with AVStream allocator semantics.",
        discussion: """
        Exit codes: 0 success (also when SIGINT/SIGTERM stopped a capture cleanly: the output \
        holds every whole frame and the summary says interrupted), 1 runtime error, 2 usage error \
        (a malformed or out-of-range option, or a format, size or control the device does not offer). \
        Errors are one line: `framedump: <message>`.
        """,
        subcommands: [ListCommand.self, InfoCommand.self, FramingCommand.self, CaptureCommand.self, ServeCommand.self]
    )
}
