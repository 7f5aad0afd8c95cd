"""VQ image tokenizer and image-generation plugin for modal-core."""
