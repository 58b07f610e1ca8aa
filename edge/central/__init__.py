"""The reference central side: `hallbox central ingest` and `hallbox central cmd`."""
