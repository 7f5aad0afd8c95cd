"""Bring real Janus checkpoints in and out of modal-core.

- `from_hf_janus(dir, out)`: a transformers `JanusForConditionalGeneration` folder
  (e.g. deepseek-community/Janus-Pro-1B) -> a modal-core checkpoint.
- `from_official_janus(dir, out)`: the deepseek-ai/Janus release layout -> a modal-core
  checkpoint.
- `to_hf_janus(checkpoint, out)`: a modal-core Janus checkpoint -> a transformers folder.

Converted checkpoints load with `modal_core.load(out)` and fine-tune with
`init_from: out`; see docs/janus-weights.md.
"""

from __future__ import annotations

from modal_core_images.janus.hf_janus import from_hf_janus, to_hf_janus
from modal_core_images.janus.official_janus import from_official_janus

__all__ = ["from_hf_janus", "from_official_janus", "to_hf_janus"]
