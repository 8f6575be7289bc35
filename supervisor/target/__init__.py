"""The target process: a supervision tree from YAML, its log capture and (optionally) IPC."""
