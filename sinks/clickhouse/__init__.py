"""The ClickHouse store: migrations, connection (chdb:// or http://), idempotent batch inserts."""
