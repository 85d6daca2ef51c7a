"""What the steps share, by concern (docs/architecture.md)."""
