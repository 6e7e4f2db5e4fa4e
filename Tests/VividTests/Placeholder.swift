// Placeholder until VividTests lands.
