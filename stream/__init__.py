"""The core: Exim main-log lines -> per-recipient delivery events.

parse.py and join.py are pure (no faust, Kafka or ClickHouse imports); app.py is the faust shell around them.
"""
