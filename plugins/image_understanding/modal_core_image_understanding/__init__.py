"""Image understanding for modal-core: a SigLIP vision transformer and an MLP adapter."""
