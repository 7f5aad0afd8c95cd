"""The shared transformer and the model assembled around it."""
