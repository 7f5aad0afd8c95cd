"""The protocol card: everything someone needs to reproduce an evaluation's number.

A suite returns its card under the `PROTOCOL_KEY` of its metrics; `modal-core eval`
moves it to the top level of `results.json` and shows it at the top of `report.md`::

    metrics["protocol"] = ProtocolCard(
        suite="vqa", protocol="official", reference="GT-Vision-Lab/VQA vqaEval.py",
        prompt_template="<|User|>: <image>\\n{question}\\n\\n<|Assistant|>:",
        preprocessing="...", decoding=Decoding(max_new_tokens=16, temperature=0.0, seed=0), items=100,
    ).as_dict()
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PROTOCOL_KEY = "protocol"
NOT_RECORDED = "not recorded by the suite"


@dataclass(frozen=True)
class Decoding:
    """How the model's outputs were drawn; None where a setting does not apply."""

    temperature: float
    """0: greedy."""
    seed: int | None
    """The base seed (generation suites add the prompt's index to it)."""
    max_new_tokens: int | None = None
    cfg: float | None = None
    """Classifier-free guidance scale."""
    cfg_schedule: str | None = None
    """`constant` or `linear` (see `sampling.Guidance`)."""
    cfg_plausibility: float | None = None
    """The plausibility constraint's a, or None: none."""
    top_k: int | None = None
    top_p: float | None = None
    images_per_prompt: int | None = None
    method: str | None = None
    """How codes were decoded (`ar`, `sjd`, `zipar`, with a window); None: autoregressive (text)."""


@dataclass(frozen=True)
class ProtocolCard:
    """One evaluation's protocol, as `results.json` records it."""

    suite: str
    protocol: str
    """The scoring rule's name, e.g. ``official`` or ``vlmevalkit-exact``."""
    reference: str
    """The code (repository, file and commit) the rule reproduces."""
    prompt_template: str
    """What the model is shown, with ``{question}`` / ``{prompt}`` for the item's text."""
    preprocessing: str
    """How input images become model inputs."""
    decoding: Decoding
    items: int
    """Items scored (questions or prompts)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Suite-specific settings that change the number (e.g. circular evaluation)."""

    def as_dict(self) -> dict[str, Any]:
        """The card as JSON-ready data."""
        return asdict(self)
