import Foundation
import XCTest

/// The uvc-camera binary (built beside this test bundle): what --help shows.
final class UVCCameraCommandLineTests: XCTestCase {
    static var uvcCamera: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("uvc-camera").path
    }

    /// The help text, with the parser's line breaks undone.
    func help() throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.uvcCamera)
        process.arguments = ["--help"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        return String(decoding: data, as: UTF8.self).split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    /// The default of --formats reads as a user types it, not as a Swift value.
    func testHelpShowsTheDefaultFormatsAsTyped() throws {
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: Self.uvcCamera), "uvc-camera not built at \(Self.uvcCamera)")
        let text = try help()
        XCTAssertTrue(text.contains("(default: yuyv,mjpeg)"), text)
        XCTAssertFalse(text.contains("FormatList"), text)
        XCTAssertFalse(text.contains("CameraConfiguration"), text)
    }
}
