"""Local developer stack: one command runs every service on embedded defaults."""
