// Placeholder until FrameBridgeTests lands.
