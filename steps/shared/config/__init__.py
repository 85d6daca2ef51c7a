"""Table configs and a config with its mapping sheet (TableSpec)."""
