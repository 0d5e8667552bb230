"""Event sinks: SQLite, JSONL, MQTT and webhook, and their spool."""
