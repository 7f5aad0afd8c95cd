"""The names of the two image modalities, which their plugins register and this
package's data sets, quickstart and Janus converters refer to."""

UNDERSTANDING = "image_understanding"
"""SigLIP-style encoder + MLP adapter (plugin `modal_core_image_understanding`)."""
GENERATION = "vq_generation"
"""VQ tokenizer + generation adapter + image head (plugin `modal_core_vq_generation`)."""
SHARED_UNDERSTANDING = "vq_understanding"
"""The generation VQ tokenizer read as the understanding encoder: its codes or quantised
features + an own adapter (plugin `modal_core_vq_generation`; the shared-encoder arms of
the Janus ablation)."""
