"""The target's durable history of log records and events (``observability.history``).

- ``store``: segment files under a disk budget, written by one thread.
- ``query``: filtered pages read back with opaque cursors.
"""
