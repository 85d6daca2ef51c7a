"""Mapping sheets: parsing, and what each type and transform means."""
