"""The embedded store: SQLite in WAL mode for rooms, participant sessions (call-detail
records), the webhook outbox and the recordings index.

- :mod:`sfu.store.schema`: the tables and their versioned migrations.
- :mod:`sfu.store.journal`: what each room event writes, in one transaction with its outbox rows.
- :mod:`sfu.store.queries`: usage summaries, session listings, failed deliveries.
- :mod:`sfu.store.writer`: the one writer thread every write goes through, off the event loop.
"""
