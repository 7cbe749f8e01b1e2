"""Sinks: delivery events -> durable storage (ClickHouse, embedded chDB by default)."""
