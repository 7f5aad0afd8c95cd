"""Checkpoints: safetensors on disk, written atomically, never pickled."""
