"""The one training loop (a LightningModule) and what drives it from a recipe."""
