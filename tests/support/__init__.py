"""Real network helpers for tests: a loopback DNS server, an SMTP sink."""
