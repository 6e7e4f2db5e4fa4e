// Placeholder until FrameBridge lands.
