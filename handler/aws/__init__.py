"""The Lambda way in: event envelopes (S3, EventBridge), routing, dispatch."""
