"""The team's `python_transform` hooks: pandas functions that shape a table's mapped rows.

Shipped in the image (the Dockerfile copies this package) and imported only for tables
whose config names one. See the README, "Writing a hook".
"""
