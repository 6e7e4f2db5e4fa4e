// Placeholder until V4L2Simulator lands.
