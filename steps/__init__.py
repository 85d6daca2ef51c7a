"""refload steps: ingest, load, validate, notify, and the pieces they share."""
