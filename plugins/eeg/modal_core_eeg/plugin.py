"""Hook implementations of the EEG plugin."""
