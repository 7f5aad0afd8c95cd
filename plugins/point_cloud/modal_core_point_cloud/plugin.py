"""Hook implementations of the point-cloud plugin."""
