"""One module per CLI command that is more than a few lines."""
