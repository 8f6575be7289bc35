"""The target side of the dashboard wires: IPC server, registration heartbeat, operator CLI."""
