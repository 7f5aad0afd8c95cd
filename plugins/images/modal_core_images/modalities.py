"""The names of the two image modalities, which their plugins register and this
package's data sets, quickstart and Janus converters refer to."""

UNDERSTANDING = "image_understanding"
"""SigLIP-style encoder + MLP adapter (plugin `modal_core_image_understanding`)."""
GENERATION = "vq_generation"
"""VQ tokenizer + generation adapter + image head (plugin `modal_core_vq_generation`)."""
