"""One dashboard for many hosts: host relays and gateways that meet on NATS."""
