"""Contracts of eximtrack: record types (records.py), topic names (topics.py) and ClickHouse migrations
(clickhouse/NNN_*.sql; clickhouse_baseline.sql, what they leave in a new store, generated from them). Imports nothing from the rest of the project and no I/O library."""
