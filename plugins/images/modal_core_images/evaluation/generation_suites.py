"""Generation suites: `geneval` (images for GenEval's prompts, in the layout its scorer
reads), `shapes_geneval` (GenEval-mini on the shapes world, scored here) and `fid`
(images for a caption file; FID when a feature extractor is available offline).

Every prompt's images are drawn in one batch of `n` with its own seed (`seed` +
prompt index), so a resumed run draws exactly what an uninterrupted one would.
Options shared by all: `limit` (prompts), `seed`, `batch_size` (prompts between two
saves of `items.jsonl`), `cfg` (guidance scale), `cfg_schedule`, `cfg_plausibility`,
`temperature`, `top_k`, `top_p` (each defaults to the model's own, from its recipe's
`generation:` section; see `Pipeline.generate`), `modality` (the output modality; default
the model's only one), `decoding` (`ar` default, `sjd[:L]`, `zipar[:w]`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from PIL import Image

from modal_core.data.chat import ASSISTANT, USER
from modal_core.data.jsonl import read_jsonl
from modal_core.errors import DataError, EvaluationError, ModelInputError
from modal_core.evaluation.items import ItemResults, score_items
from modal_core.evaluation.options import data_file, float_option, int_option, limited
from modal_core.evaluation.protocol import PROTOCOL_KEY, Decoding, ProtocolCard
from modal_core.generation.decoding_method import DecodingMethod
from modal_core.generation.settings import GenerationSettings
from modal_core_images.evaluation import geneval, geneval_scorer
from modal_core_images.evaluation.shapes_geneval import TAGS, mini_prompts, score_folder
from modal_core_images.processing import save_image_grid

SHAPES_REFERENCE = "modal-core's shapes checker applying GenEval's rules (djghosh13/geneval@af4902f2 evaluation/evaluate_images.py)"
FID_REFERENCE = "mseitzer/pytorch-fid (calculate_fid_given_paths, Inception pool3, 2048 dims)"
PREVIEW_FILE = "generations.png"
PREVIEW_COUNT = 32
DISPLAY_SIZE = 96


def _draw(pipeline: Any, options: dict[str, Any], prompt: str, index: int, n: int) -> list[Image.Image]:
    settings = _generation_settings(pipeline, options)
    return pipeline.generate(
        prompt,
        n=n,
        seed=int_option(options, "seed", 0) + index,
        modality=options.get("modality"),
        decoding=_method(options),
        **settings.as_overrides(),
    )[0]


def _generation_settings(pipeline: Any, options: dict[str, Any]) -> GenerationSettings:
    """The guidance and sampling the suite draws with: the model's own
    (`Pipeline.generation`, from its recipe) with the options given replacing them."""
    schedule = options.get("cfg_schedule")
    try:
        return pipeline.settings(
            cfg=float_option(options, "cfg", None),
            cfg_schedule=None if schedule is None else str(schedule),
            cfg_plausibility=float_option(options, "cfg_plausibility", None),
            temperature=float_option(options, "temperature", None),
            top_k=int_option(options, "top_k", None, minimum=0),
            top_p=float_option(options, "top_p", None),
        )
    except ModelInputError as error:
        raise EvaluationError(f"generation options: {error}") from error


def _method(options: dict[str, Any]) -> str:
    """The `decoding` option, checked (`ar` when absent)."""
    try:
        return str(DecodingMethod.parse(options.get("decoding") or "ar"))
    except ModelInputError as error:
        raise EvaluationError(f"option decoding: {error}") from error


def _decoding(settings: GenerationSettings, options: dict[str, Any], n: int) -> Decoding:
    return Decoding(
        temperature=settings.temperature,
        seed=int_option(options, "seed", 0),
        cfg=settings.cfg,
        cfg_schedule=settings.cfg_schedule,
        cfg_plausibility=settings.cfg_plausibility,
        top_k=settings.top_k,
        top_p=settings.top_p,
        images_per_prompt=n,
        method=_method(options),
    )


def _card(
    pipeline: Any, options: dict[str, Any], suite: str, protocol: str, reference: str, items: int, n: int, **notes: Any
) -> dict[str, Any]:
    """The protocol card of a generation suite: every prompt drawn with seed `seed` + its index."""
    return ProtocolCard(
        suite=suite,
        protocol=protocol,
        reference=reference,
        prompt_template=f"{USER}: {{prompt}}\n\n{ASSISTANT}:<image>",
        preprocessing="none: text prompts only (images are generated)",
        decoding=_decoding(_generation_settings(pipeline, options), options, n),
        items=items,
        notes={"seeds": "seed + prompt index, one batch of images per prompt", **notes},
    ).as_dict()


def _enlarge(image: Image.Image) -> Image.Image:
    scale = max(1, DISPLAY_SIZE // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def generate_geneval_folder(
    pipeline: Any, prompts: list[dict[str, Any]], out_dir: Path, options: dict[str, Any], description: str
) -> list[dict]:
    """Draw `n` (default 4) images per GenEval prompt into `out_dir` in GenEval's layout,
    skipping prompts done by an earlier run; returns one record per prompt."""
    n = int_option(options, "n", 4, minimum=1)

    def draw(batch: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        records = []
        for index, metadata in batch:
            images = _draw(pipeline, options, metadata["prompt"], index, n)
            grid_path = geneval.prompt_folder(out_dir, index) / geneval.GRID_FILE
            geneval.write_prompt(out_dir, index, metadata, images)
            save_image_grid([_enlarge(image) for image in images], grid_path, columns=min(n, 4))
            records.append({"index": index, "tag": metadata["tag"], "prompt": metadata["prompt"], "samples": n})
        return records

    batch_size = int_option(options, "batch_size", 8, minimum=1)
    return score_items(list(enumerate(prompts)), lambda pair: f"{pair[0]:05d}", draw, ItemResults(out_dir), batch_size, description)


def _preview(out_dir: Path, captions_by_sample: dict[str, str]) -> None:
    """`generations.png`: the first sample of the first prompts, captioned."""
    shown = list(captions_by_sample.items())[:PREVIEW_COUNT]
    if shown:
        images = []
        for path, _ in shown:
            with Image.open(path) as image:
                images.append(_enlarge(image.convert("RGB")))
        save_image_grid(images, out_dir / PREVIEW_FILE, columns=8, captions=[caption for _, caption in shown])


def evaluate_geneval(pipeline: Any, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Draw images for GenEval's prompts in the folder layout its object-detector scorer reads.

    `data`: GenEval's `evaluation_metadata.jsonl` (or its `prompts/` folder); `n`
    samples per prompt (default 4, as GenEval). With `geneval_dir` (a GenEval checkout),
    `detector` (its Mask2Former weights) and optionally `geneval_python`, GenEval's own
    `evaluate_images.py` and `summary_scores.py` score the folder and their numbers join
    the metrics; without them the metrics say what is missing.
    """
    setup = geneval_scorer.geneval_setup(options)  # a wrong set-up is refused before drawing
    path = data_file(options, "geneval", "evaluation_metadata.jsonl", "GenEval's evaluation_metadata.jsonl")
    prompts = limited(geneval.read_prompts(path), options)
    records = generate_geneval_folder(pipeline, prompts, out_dir, options, "geneval")
    geneval.validate_folder(out_dir)  # a self-check: what GenEval's scorer will read
    _preview(out_dir, {str(geneval.sample_path(out_dir, r["index"], 0)): r["prompt"] for r in records})
    tags: dict[str, int] = {}
    for record in records:
        tags[record["tag"]] = tags.get(record["tag"], 0) + 1
    metrics: dict[str, Any] = {
        "prompts": len(records),
        "images": sum(record["samples"] for record in records),
        "prompts_by_tag": tags,
        "geneval_folder": str(out_dir),
    }
    if setup is None:
        metrics["geneval"] = None
        metrics["geneval_unavailable"] = geneval_scorer.unavailable_reason()
        metrics["score_with"] = f"python evaluation/evaluate_images.py {out_dir} --outfile results.jsonl --model-path DETECTOR_DIR"
    else:
        metrics["geneval"] = geneval_scorer.score_with_geneval(setup, out_dir)
    n = int_option(options, "n", 4, minimum=1)
    metrics[PROTOCOL_KEY] = _card(
        pipeline, options, "geneval", "geneval", geneval_scorer.REFERENCE, len(records), n, scored=setup is not None
    )
    return metrics


def evaluate_shapes_geneval(pipeline: Any, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """GenEval-mini on the shapes world (colour, count, position, two objects), judged by the deterministic checker.

    `per_tag` prompts per tag (default 20), `n` samples each (default 4), `split`
    (heldout | train: which two-object pairs to prompt, default heldout). Writes the
    GenEval folder layout, `geneval_results.jsonl` (GenEval's per-image verdicts) and
    `generations.png`.
    """
    split = str(options.get("split") or "heldout")
    if split not in ("heldout", "train"):
        raise DataError(f"suite shapes_geneval: option split must be heldout or train, got {split!r}")
    prompts = limited(mini_prompts(int_option(options, "per_tag", 20, minimum=1), int_option(options, "seed", 0), split), options)
    generate_geneval_folder(pipeline, prompts, out_dir, options, "shapes geneval")
    verdicts = score_folder(out_dir)
    lines = "".join(json.dumps(v, sort_keys=True) + "\n" for v in verdicts)
    (out_dir / "geneval_results.jsonl").write_text(lines, encoding="utf-8")
    firsts = {v["filename"]: f"{'OK' if v['correct'] else 'x'} {v['prompt']}" for v in verdicts if v["filename"].endswith("0000.png")}
    _preview(out_dir, firsts)
    summary = geneval.summarise(verdicts)
    summary["tags"] = {tag: summary["tags"][tag] for tag in TAGS if tag in summary["tags"]}
    n = int_option(options, "n", 4, minimum=1)
    summary[PROTOCOL_KEY] = _card(pipeline, options, "shapes_geneval", "geneval-rules", SHAPES_REFERENCE, len(prompts), n, split=split)
    return summary


FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
"""The Inception weights file `pytorch-fid` loads from torch's hub cache."""


def fid_unavailable_reason() -> str | None:
    """Why FID cannot be computed offline here, or None when it can (`pytorch-fid`
    installed and its Inception weights already in torch's hub cache)."""
    if importlib.util.find_spec("pytorch_fid") is None:
        return "the pytorch-fid package is not installed"
    import torch

    weights = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS
    if not weights.is_file():
        return f"the Inception weights are not in the local cache ({weights}); nothing is downloaded"
    return None


def evaluate_fid(pipeline: Any, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Images for captions (MSCOCO-30K / MJHQ-30K style) and FID against a local folder, when an Inception model is available offline.

    `data`: a JSONL file of {"caption"} (or {"prompt"}) records; `reference`: the
    folder of real images. Images go to `samples/<index:05d>.png`. Without
    `pytorch-fid` and its cached weights FID is reported as unavailable (null) with
    the reason, and the command to compute it later.
    """
    path = data_file(options, "fid", "captions.jsonl", 'a JSONL file of {"caption": ...} records')
    records = read_jsonl(path, required=())
    limit = int_option(options, "limit", None, minimum=1)
    captions = []
    for index in range(len(records) if limit is None else min(limit, len(records))):
        caption = records[index].get("caption", records[index].get("prompt"))
        if not isinstance(caption, str):
            raise DataError(f"{records.where(index)}: expected a 'caption' (or 'prompt') string")
        captions.append((index, caption))
    samples = out_dir / "samples"
    samples.mkdir(parents=True, exist_ok=True)

    def draw(batch: list[tuple[int, str]]) -> list[dict[str, Any]]:
        for index, caption in batch:
            _draw(pipeline, options, caption, index, 1)[0].save(samples / f"{index:05d}.png", format="PNG")
        return [{"caption": caption} for _, caption in batch]

    done = score_items(captions, lambda pair: f"{pair[0]:05d}", draw, ItemResults(out_dir), int_option(options, "batch_size", 8, 1), "fid")
    _preview(out_dir, {str(samples / f"{index:05d}.png"): caption for index, caption in captions})
    reference = options.get("reference")
    metrics: dict[str, Any] = {"images": len(done), "samples_dir": str(samples), "reference": reference}
    metrics[PROTOCOL_KEY] = _card(pipeline, options, "fid", "pytorch-fid", FID_REFERENCE, len(done), 1)
    reason = fid_unavailable_reason()
    if reference and not Path(str(reference)).is_dir():
        raise DataError(f"suite fid: reference folder not found: {reference}")
    if reason is None and reference:
        import torch
        from pytorch_fid.fid_score import calculate_fid_given_paths

        device = "cuda" if torch.cuda.is_available() else "cpu"
        metrics["fid"] = float(
            calculate_fid_given_paths([str(samples), str(reference)], batch_size=50, device=device, dims=2048, num_workers=0)
        )
        return metrics
    metrics["fid"] = None
    metrics["fid_unavailable"] = reason or "no reference folder given (-o reference=DIR)"
    metrics["compute_later"] = f"python -m pytorch_fid {samples} {reference or 'REFERENCE_DIR'}"
    return metrics
