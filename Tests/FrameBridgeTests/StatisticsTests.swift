import Foundation
import FrameBridge
import XCTest

/// `CaptureStatistics.adding(_:)` names its fields one by one; these catch a counter added to
/// the struct and forgotten there.
final class StatisticsTests: XCTestCase {
    /// Every field through Codable: each integer set to `value`, each optional sequence or text given one.
    private func statistics(every value: Int, text: String) throws -> CaptureStatistics {
        let empty = try JSONSerialization.jsonObject(with: JSONEncoder().encode(CaptureStatistics())) as? [String: Any] ?? [:]
        var fields = empty.mapValues { _ in value as Any }
        for name in ["firstSequence", "lastSequence"] { fields[name] = value }
        for name in ["lastViolation", "lastCorruption"] { fields[name] = text }
        let data = try JSONSerialization.data(withJSONObject: fields)
        return try JSONDecoder().decode(CaptureStatistics.self, from: data)
    }

    func testAddingSumsEveryCounter() throws {
        let earlier = try statistics(every: 1, text: "earlier"), later = try statistics(every: 2, text: "later")
        let sum = try JSONSerialization.jsonObject(with: JSONEncoder().encode(earlier.adding(later))) as? [String: Any] ?? [:]
        let fieldCount = Mirror(reflecting: CaptureStatistics()).children.count
        XCTAssertEqual(sum.count, fieldCount, "every field is encoded: \(sum.keys.sorted())")
        for (name, value) in sum {
            switch name {
            case "firstSequence": XCTAssertEqual(value as? Int, 1, "the span starts with the earlier stream")
            case "lastSequence": XCTAssertEqual(value as? Int, 2, "and ends with the later one")
            case "lastViolation", "lastCorruption": XCTAssertEqual(value as? String, "later", name)
            default: XCTAssertEqual(value as? Int, 3, "\(name) is not summed by adding(_:)")
            }
        }
    }

    func testAddingKeepsTheEarlierDescriptionsWhenTheLaterHasNone() throws {
        let earlier = try statistics(every: 1, text: "earlier")
        let sum = earlier.adding(CaptureStatistics())
        XCTAssertEqual(sum.lastViolation, "earlier")
        XCTAssertEqual(sum.lastCorruption, "earlier")
        XCTAssertEqual(sum.firstSequence, 1)
        XCTAssertEqual(sum.lastSequence, 1)
    }
}
