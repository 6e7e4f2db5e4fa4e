// Placeholder until V4L2Tests lands.
