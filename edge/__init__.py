"""hallbox edge core: domain, store, journal/outbox, API, CLI."""

__version__ = "0.1.0"
