// Placeholder until FrameDump lands.
