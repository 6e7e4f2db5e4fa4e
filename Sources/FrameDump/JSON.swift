// FoundationEssentials, not Foundation: the CLI loads no ICU or CoreFoundation for its JSON.
import FoundationEssentials

/// JSON encoding and decoding of framedump's reports: camelCase keys, sorted, pretty-printed.
public enum FrameDumpJSON {
    public static func encode<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            let data = try encoder.encode(value)
            return String(decoding: data, as: UTF8.self)
        } catch {
            return "{\"error\": \"cannot encode the report: \(error)\"}"
        }
    }

    public static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(text.utf8))
    }
}
