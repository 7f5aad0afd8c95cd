"""`modal-core prepare`: encode a recipe's data once with its frozen encoders."""
