"""Failure reports, the channels, and recovery when a table passes."""
