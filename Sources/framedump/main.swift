import ArgumentParser
import FrameDump

// The entry point: parses the command line, runs the command, and turns every error into one
// line `framedump: <message>` with exit code 2 (usage) or 1 (runtime).
do {
    var command = try Framedump.parseAsRoot()
    try command.run()
} catch let error as FrameDumpError {
    printError("framedump: \(error.message)\n")
    exitProcess(error.exitCode)
} catch {
    let code = Framedump.exitCode(for: error)
    if code == .success {
        Framedump.exit(withError: error) // --help, --version
    }
    var message = Framedump.message(for: error)
    if let newline = message.firstIndex(of: "\n") { message = String(message[..<newline]) }
    if message.hasPrefix("Error: ") { message = String(message.dropFirst(7)) }
    printError("framedump: \(message)\n")
    exitProcess(code == .validationFailure ? 2 : 1)
}
