"""`python -m handler init`: a config and sheet from a sample."""
