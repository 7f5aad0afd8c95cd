"""Data sets, tokenizers and batching: everything between raw samples and model inputs."""
