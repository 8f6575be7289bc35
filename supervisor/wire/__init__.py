"""Wire-level building blocks shared by the target, the relay and their clients."""
