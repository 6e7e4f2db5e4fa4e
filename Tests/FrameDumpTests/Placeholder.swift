// Placeholder until FrameDumpTests lands.
