"""Inference: KV-cached decoding of text and of output-modality codes with CFG."""
