"""The dashboard relay: registration, leased registry, wss:// sessions, target links, audit.

Knows only the wire contracts (``supervisor.wire``), never the supervision tree.
"""
