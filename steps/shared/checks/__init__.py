"""Data-quality checks: the registry, and user SQL held to reading."""
