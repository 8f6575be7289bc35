"""The supervision tree: specs, lifecycle, policies, journal, runtime and state model."""
