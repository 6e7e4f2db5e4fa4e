import Foundation
import FrameBridgeTestSupport
import XCTest

/// A frame's bytes cannot outlive the lock: code that takes a payload or one of its spans out
/// of the closure does not compile (issue 14: `withLockedPayload { $0.plane(0) }` used to
/// return a pointer that dangled after stop() unmapped the buffer). Each snippet is compiled
/// by swiftc against this build's modules, as a client of the package would compile it; the
/// first ones must compile, so a broken set-up cannot pass as "did not compile".
final class PayloadSafetyTests: XCTestCase {
    func testSpansCannotEscapeTheLockedClosure() throws {
        let accepted: [(String, String)] = [
            ("reads a byte count", """
            func read(_ pointer: inout StreamPointer) throws -> Int {
                try pointer.withLockedPayload { $0.plane(0).byteCount }
            }
            """),
            ("copies bytes out", """
            func copy(_ frame: CapturedFrame) throws -> [UInt8] {
                try frame.withLockedPayload { payload in payload.plane(0).withUnsafeBytes { Array($0.prefix(4)) } }
            }
            """),
        ]
        let rejected: [(String, String)] = [
            ("returns a span", """
            func escape(_ pointer: inout StreamPointer) throws -> Int {
                let span: RawSpan = try pointer.withLockedPayload { $0.plane(0) }
                return span.byteCount
            }
            """),
            ("uses a span after the closure", """
            func escape(_ pointer: inout StreamPointer) throws -> Int {
                let span = try pointer.withLockedPayload { $0.plane(0) }
                return span.byteCount
            }
            """),
            ("stores a span outside", """
            func escape(_ pointer: inout StreamPointer) throws {
                var saved: RawSpan? = nil
                try pointer.withLockedPayload { payload in saved = payload.plane(0) }
                _ = saved
            }
            """),
            ("returns the payload", """
            func escape(_ frame: CapturedFrame) throws -> Int {
                let payload = try frame.withLockedPayload { $0 }
                return payload.planeCount
            }
            """),
        ]
        for (name, body) in accepted {
            let result = try compile(body)
            XCTAssertEqual(result.status, 0, "\(name) should compile:\n\(result.errors)")
        }
        for (name, body) in rejected {
            let result = try compile(body)
            XCTAssertNotEqual(result.status, 0, "\(name) compiled, so a span can outlive its lock")
            XCTAssertTrue(result.errors.contains("error:"), "\(name): \(result.errors)")
            print("payload safety: \(name): \(result.errors.split(separator: "\n").first { $0.contains("error:") } ?? "")")
        }
    }

    private func compile(_ body: String) throws -> (status: Int32, errors: String) {
        let binPath = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let modules = binPath + "/Modules"
        XCTAssertTrue(FileManager.default.fileExists(atPath: modules + "/FrameBridge.swiftmodule"),
                      "no FrameBridge.swiftmodule beside \(CommandLine.arguments[0])")
        let swiftc = try XCTUnwrap(ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":")
            .map { "\($0)/swiftc" }.first { FileManager.default.isExecutableFile(atPath: $0) }, "no swiftc on PATH")
        let directory = NSTemporaryDirectory() + "/framebridge-payload-safety-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        let source = directory + "/snippet.swift"
        try ("import FrameBridge\n\n" + body + "\n").write(toFile: source, atomically: true, encoding: .utf8)
        var arguments = ["-emit-sil", "-o", "/dev/null", "-swift-version", "6", "-module-cache-path", directory + "/cache", "-I", modules]
        // The C modules FrameBridge's interface reaches: this package's (module maps SwiftPM
        // wrote beside the build, headers in Sources) and its dependencies' own (swift-system's CSystem).
        for module in ["CV4L2", "CTurboJPEG"] {
            arguments += ["-Xcc", "-fmodule-map-file=\(binPath)/\(module).build/module.modulemap",
                          "-Xcc", "-I", "-Xcc", "\(root)/Sources/\(module)/include"]
        }
        let checkouts = URL(fileURLWithPath: binPath).deletingLastPathComponent().deletingLastPathComponent().path + "/checkouts"
        for package in (try? FileManager.default.contentsOfDirectory(atPath: checkouts)) ?? [] {
            let sources = "\(checkouts)/\(package)/Sources"
            for target in (try? FileManager.default.contentsOfDirectory(atPath: sources)) ?? [] {
                let include = "\(sources)/\(target)/include"
                if FileManager.default.fileExists(atPath: include + "/module.modulemap") {
                    arguments += ["-Xcc", "-fmodule-map-file=\(include)/module.modulemap", "-Xcc", "-I", "-Xcc", include]
                }
            }
        }
        let result = try ChildProcess.run(swiftc, arguments + [source])
        return (result.status, result.stderr + result.text)
    }
}
