"""YAML loading and validation for the target and relay configuration files."""
