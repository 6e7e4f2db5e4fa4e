import V4L2Simulator

/// The path of the simulated capture device a test opens.
public let simulatedPath = "/dev/video0"

/// A backend with one simulated device at `path`.
public func makeBackend(_ configuration: SimulatedDeviceConfiguration = SimulatedDeviceConfiguration(),
                        path: String = simulatedPath) -> SimulatedV4L2Backend {
    SimulatedV4L2Backend(path: path, configuration: configuration)
}
