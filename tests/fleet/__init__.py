"""Fleet tests: the NATS bus, host relays and gateways over a real nats-server."""
