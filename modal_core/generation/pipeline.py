"""`modal_core.load(checkpoint)`: a trained model ready to answer and to draw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modal_core.assemble import Assembled, assemble_checkpoint
from modal_core.checkpoints import store
from modal_core.data.chat import caption_to_image, question_answer
from modal_core.data.segments import Media
from modal_core.errors import ModelInputError
from modal_core.generation.engine import DecodeEngine
from modal_core.generation.settings import GenerationSettings
from modal_core.modality import VariableItem
from modal_core.plugins import PluginManager, get_plugin_manager

MAX_IMAGES_PER_CALL = 256
MAX_PROMPT_CHARACTERS = 4000


class Pipeline:
    """A loaded model with its tokenizer and modalities: `answer` and `generate_images`."""

    def __init__(self, assembled: Assembled, compile_mode: str | None = None) -> None:
        self.model = assembled.model.eval()
        self.modalities = assembled.modalities
        self.collator = assembled.collator
        self.tokenizer = assembled.tokenizer
        self.generation = assembled.generation
        """How the model draws when `generate` is not told (the recipe's `generation:` section)."""
        # Static KV cache, kept between calls of the same shape; `compile_mode` compiles its step.
        self.engine = DecodeEngine(self.model, compile_mode=compile_mode)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        plugins: PluginManager | None = None,
        device: str = "cpu",
        compile_mode: str | None = None,
        verify: bool = True,
    ) -> Pipeline:
        """Load a modal-core checkpoint directory (or a run directory: its last one).
        `compile_mode` (e.g. "default"): `torch.compile` the decode step; the first call
        then takes tens of seconds longer, later ones run 1.5-2x faster (see the
        generation-speed docs). `verify`: check every file's SHA-256 and that every
        weight is finite (a full read; `False` checks sizes only, for huge checkpoints)."""
        directory = store.verify(store.resolve_checkpoint(checkpoint), hashes=verify)
        # Weights go straight from the file into the model: one copy in memory, not two.
        assembled = assemble_checkpoint(directory, plugins or get_plugin_manager())
        if verify:
            store.check_finite(assembled.model.state_dict(), directory)
        assembled.model.to(device)
        return cls(assembled, compile_mode=compile_mode)

    def modality(self, direction: str, name: str | None = None, keyword: str | None = None) -> str:
        """The model's one modality of `direction` ("input" or "output"), or the one named,
        or the input modality that declares `keyword` (`ModalitySpec.keyword`)."""
        candidates = [
            n for n, r in self.modalities.items() if r.spec.direction == direction and (keyword is None or r.spec.keyword == keyword)
        ]
        if name is not None:
            if name not in candidates:
                raise ModelInputError(f"this model has no {direction} modality {name!r}; it has {candidates}")
            return name
        if keyword is not None and len(candidates) != 1:
            declared = sorted({r.spec.keyword for r in self.modalities.values() if r.spec.keyword})
            inputs = sorted(n for n, r in self.modalities.items() if r.spec.direction == "input")
            raise ModelInputError(
                f"no input modality of this model takes the keyword {keyword}=; its input modalities are {inputs or 'none'}"
                f" (keywords: {', '.join(f'{k}=' for k in declared) or 'none'}; or pass media={{name: item}})"
            )
        if len(candidates) != 1:
            raise ModelInputError(f"name the {direction} modality to use: this model has {candidates or 'none'}")
        return candidates[0]

    def generate(
        self,
        prompts: str | list[str],
        n: int = 4,
        cfg: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = 0,
        modality: str | None = None,
        decoding: str = "ar",
        cfg_schedule: str | None = None,
        cfg_plausibility: float | None = None,
    ) -> list[list[Any]]:
        """`n` outputs (e.g. PIL images) of the output modality for each prompt.
        `decoding`: "ar" (one code per forward pass), "sjd" (speculative Jacobi
        decoding: several per pass, the same distribution) or "zipar" (rows in
        parallel: fewer passes, not lossless); a window may follow, e.g. "sjd:16"
        (see the generation-speed docs). Guidance and sampling (`cfg`, `cfg_schedule`,
        `cfg_plausibility`, `temperature`, `top_k`, `top_p`; see `GenerationSettings`)
        left None are the model's own, `self.generation` (its recipe's `generation:`
        section; Janus's constant CFG 5 unless the recipe says otherwise); `top_k=0`,
        `top_p=1` and `cfg_plausibility=0` turn a default filter off."""
        settings = self.settings(
            cfg=cfg, cfg_schedule=cfg_schedule, cfg_plausibility=cfg_plausibility, temperature=temperature, top_k=top_k, top_p=top_p
        )
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        _check_prompts(prompts)
        if not 1 <= n * len(prompts) <= MAX_IMAGES_PER_CALL:
            raise ModelInputError(f"prompts x n must be between 1 and {MAX_IMAGES_PER_CALL}, got {n * len(prompts)}")
        name = self.modality("output", modality)
        runtime = self.modalities[name]
        samples = [caption_to_image(prompt, None, name) for prompt in prompts]
        codes = self.engine.generate_codes(
            self.collator,
            samples,
            name,
            runtime.num_positions,
            n,
            settings.cfg,
            *settings.sampling,
            seed,
            decoding,
            cfg_schedule=settings.cfg_schedule,
            cfg_plausibility=settings.cfg_plausibility,
        )
        with torch.no_grad():
            outputs = runtime.spec.to_output(self.model.encoders[name].decode(codes).cpu())
        return [outputs[i * n : (i + 1) * n] for i in range(len(prompts))]

    def settings(self, **overrides: Any) -> GenerationSettings:
        """The guidance and sampling a `generate` call with these keyword arguments uses:
        the model's defaults (`self.generation`) with the values not None replacing them."""
        return self.generation.with_overrides(**overrides)

    def generate_images(
        self, prompt: str, n: int = 4, cfg: float | None = None, temperature: float | None = None, seed: int | None = 0, **options
    ) -> list[Any]:
        """`n` images for one prompt (guidance `cfg` and `temperature`: default the
        model's); `options` are `generate`'s: top_k, top_p, cfg_schedule,
        cfg_plausibility, modality, decoding (e.g. `decoding="sjd"`)."""
        return self.generate(prompt, n=n, cfg=cfg, temperature=temperature, seed=seed, **options)[0]

    def answer(
        self,
        question: str | list[str],
        media: dict[str, Any] | None = None,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int | None = 0,
        **by_keyword: Any,
    ) -> str | list[str]:
        """Answer a question (or a list of them) about `media` (modality name -> item).
        With a list of questions, a list or tuple of items gives one per question; any
        other value is the same item for every question. An input modality that declares
        a `keyword` also takes its item as that keyword argument, e.g. `image=path` for
        the image plugin's. Greedy unless `temperature` > 0."""
        single = isinstance(question, str)
        if not single and not isinstance(question, list | tuple):
            raise ModelInputError(f"question: expected a string or a list of strings, got {type(question).__name__}")
        questions = [question] if single else list(question)
        _check_prompts(questions)
        items = dict(media or {})
        for keyword, item in by_keyword.items():
            if item is not None:
                items[self.modality("input", keyword=keyword)] = item
        for name in items:
            self.modality("input", name)  # names the modalities this model has when it lacks `name`
        per_question = {name: _per_question(name, value, len(questions), single) for name, value in items.items()}
        samples = [
            question_answer(text, None, [Media(name, values[index]) for name, values in per_question.items()])
            for index, text in enumerate(questions)
        ]
        eos = self.tokenizer.eos_token_id  # the checkpoint's own (DeepSeek's differs from ours)
        ids = self.engine.generate_text(self.collator, samples, max_new_tokens, temperature, seed=seed, stop_ids=[eos])
        answers = [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]
        return answers[0] if single else answers

    def input_layouts(self, media: dict[str, Any]) -> dict[str, str]:
        """How the model lays out each input item (modality name -> item), for people: e.g.
        ``"4 tiles (1x3 grid + thumbnail)"`` for a tiled image; modalities whose items all
        have one size are left out."""
        layouts = {}
        for name, item in media.items():
            processed = self.modalities[self.modality("input", name)].processor(item)
            if isinstance(processed, VariableItem):
                layouts[name] = processed.description
        return layouts


def _check_prompts(prompts: list[str]) -> None:
    if not prompts:
        raise ModelInputError("no prompt or question given")
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARACTERS:
            raise ModelInputError(f"prompts and questions must be non-empty strings of at most {MAX_PROMPT_CHARACTERS} characters")


def _per_question(name: str, value: Any, count: int, single: bool) -> list[Any]:
    """One item of modality `name` per question: a list or tuple gives one per question,
    anything else (a path, an array, an image) is the same item for every question."""
    if single or not isinstance(value, list | tuple):
        return [value] * count
    if len(value) != count:
        raise ModelInputError(f"{name}: {len(value)} item(s) for {count} question(s); give one per question, or one item for all")
    return list(value)


def load(
    checkpoint: str | Path,
    device: str = "cpu",
    plugins: PluginManager | None = None,
    compile_mode: str | None = None,
    verify: bool = True,
) -> Pipeline:
    """Load a trained modal-core checkpoint for inference (`compile_mode`, `verify`: see `Pipeline.load`)."""
    return Pipeline.load(checkpoint, plugins=plugins, device=device, compile_mode=compile_mode, verify=verify)


__all__ = ["Pipeline", "load"]
