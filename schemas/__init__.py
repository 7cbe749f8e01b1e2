"""Contracts of eximtrack: record types (records.py), topic names (topics.py) and ClickHouse migrations
(clickhouse/NNN_*.sql). Imports nothing from the rest of the project and no I/O library."""
