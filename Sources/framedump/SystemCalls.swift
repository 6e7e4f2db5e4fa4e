#if canImport(Glibc)
import Glibc
#endif

/// write(2), retrying EINTR.
func fdWrite(_ descriptor: Int32, _ base: UnsafeRawPointer, _ count: Int) -> Int {
    while true {
        let written = write(descriptor, base, count)
        if written < 0 && errno == EINTR { continue }
        return written
    }
}

func exitProcess(_ code: Int32) -> Never {
    exit(code)
}
