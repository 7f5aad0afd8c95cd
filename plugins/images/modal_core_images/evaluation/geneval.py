"""GenEval's file formats and scoring rules (djghosh13/geneval).

Prompts come from GenEval's `evaluation_metadata.jsonl`, one JSON object per line::

    {"tag": "position", "include": [{"class": "dog", "count": 1},
     {"class": "cat", "count": 1, "position": ["right of", 0]}], "prompt": "a photo of a dog left of a cat"}

Generated images go into the folder layout GenEval's `evaluation/evaluate_images.py`
reads, prompt N (counting from 0, in file order) in a folder of five digits::

    <out>/00000/metadata.jsonl      line N of evaluation_metadata.jsonl (one JSON object)
    <out>/00000/samples/0000.png    the samples, numbered from 0
    <out>/00000/grid.png            optional overview (GenEval ignores it)

GenEval skips every entry of `<out>` that is not a folder with a purely numeric name,
so results and reports may sit next to the prompt folders.

`judge` applies GenEval's rules to detections: every `include` clause needs at least
`count` objects of its class (the first `count` detections are checked, most confident
first); with `color`, that many of them must have the colour; with `position` =
[relation, k], each must stand in the relation to every object matched by clause k,
judged on bounding boxes as GenEval does (`relative_position`). Any `exclude` clause
with `count` or more detections of its class fails the image. The overall score is the
mean over tags of the share of correct images.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from modal_core.data.jsonl import read_jsonl
from modal_core.errors import DataError

METADATA_FILE = "metadata.jsonl"
SAMPLES_DIR = "samples"
GRID_FILE = "grid.png"
POSITION_THRESHOLD = 0.1
"""GenEval's default `position_threshold`: the share of both objects' sizes that their
centres must be apart beyond before a relation counts."""
_SAMPLE_NAME = re.compile(r"\d+\.png")
_RELATIONS = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class Detection:
    """One detected object: its bounding box (x0, y0, x1, y1) in pixels and its colour."""

    box: tuple[float, float, float, float]
    colour: str | None = None


def prompt_folder(out_dir: Path, index: int) -> Path:
    """The folder of prompt `index`: `<out>/<index:05d>`."""
    return Path(out_dir) / f"{index:05d}"


def sample_path(out_dir: Path, index: int, sample: int) -> Path:
    """Sample `sample` of prompt `index`: `<out>/<index:05d>/samples/<sample:04d>.png`."""
    return prompt_folder(out_dir, index) / SAMPLES_DIR / f"{sample:04d}.png"


def validate_metadata(metadata: Any, where: str) -> dict[str, Any]:
    """Check one GenEval metadata object (tag, prompt, include clauses) and return it."""
    if not isinstance(metadata, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(metadata).__name__}")
    for key, kind in (("tag", str), ("prompt", str), ("include", list)):
        if not isinstance(metadata.get(key), kind):
            raise DataError(f"{where}: {key!r} must be a {kind.__name__}, got {metadata.get(key)!r}")
    for clause_kind in ("include", "exclude"):
        for number, clause in enumerate(metadata.get(clause_kind, [])):
            if not isinstance(clause, dict) or not isinstance(clause.get("class"), str) or not isinstance(clause.get("count"), int):
                raise DataError(f"{where}: {clause_kind}[{number}] needs a 'class' string and a 'count' integer, got {clause!r}")
            position = clause.get("position")
            if position is not None and not (
                isinstance(position, list) and len(position) == 2 and position[0] in _RELATIONS and isinstance(position[1], int)
            ):
                raise DataError(f"{where}: {clause_kind}[{number}].position must be [relation, clause index], got {position!r}")
    return metadata


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Every prompt of a GenEval `evaluation_metadata.jsonl`, validated, in file order."""
    records = read_jsonl(path, required=("tag", "prompt", "include"))
    return [validate_metadata(records[index], records.where(index)) for index in range(len(records))]


def write_prompt(
    out_dir: Path, index: int, metadata: dict[str, Any], images: Sequence[Image.Image], grid: Image.Image | None = None
) -> None:
    """Write prompt `index`'s metadata and samples in GenEval's layout. The metadata file
    is written last, so a folder with `metadata.jsonl` is complete."""
    folder = prompt_folder(out_dir, index)
    (folder / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    for number, image in enumerate(images):
        image.save(sample_path(out_dir, index, number), format="PNG")
    if grid is not None:
        grid.save(folder / GRID_FILE, format="PNG")
    (folder / METADATA_FILE).write_text(json.dumps(metadata) + "\n", encoding="utf-8")


def read_folder(out_dir: str | Path) -> Iterator[tuple[int, dict[str, Any], list[Path]]]:
    """(index, metadata, sample paths) of every prompt folder of a GenEval image folder,
    in index order, reading only what GenEval's scorer reads."""
    out_dir = Path(out_dir)
    for folder in sorted(p for p in out_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        meta_file = folder / METADATA_FILE
        if not meta_file.is_file():
            raise DataError(f"{folder}: missing {METADATA_FILE}")
        try:
            metadata = json.loads(meta_file.read_text(encoding="utf-8"))  # GenEval reads it with json.load
        except json.JSONDecodeError as error:
            raise DataError(f"{meta_file}: not a single JSON object ({error.msg})") from error
        validate_metadata(metadata, str(meta_file))
        samples_dir = folder / SAMPLES_DIR
        samples = sorted(p for p in samples_dir.iterdir() if p.is_file() and _SAMPLE_NAME.fullmatch(p.name)) if samples_dir.is_dir() else []
        yield int(folder.name), metadata, samples


def validate_folder(out_dir: str | Path, prompts: Sequence[dict[str, Any]] | None = None, samples_per_prompt: int | None = None) -> int:
    """Check that `out_dir` is a GenEval image folder and return its number of prompts.

    Checks: prompt folders are named 00000, 00001, ... without gaps; each holds a
    `metadata.jsonl` with one valid metadata object (equal to `prompts[index]` when
    given) and `samples/0000.png`, `0001.png`, ... (exactly `samples_per_prompt` when
    given), each a readable PNG.
    """
    count = 0
    for count, (index, metadata, samples) in enumerate(read_folder(out_dir), start=1):
        where = prompt_folder(Path(out_dir), index)
        if index != count - 1:
            raise DataError(f"{where}: expected folder {count - 1:05d} next (prompt folders are numbered without gaps)")
        if prompts is not None and (index >= len(prompts) or metadata != prompts[index]):
            raise DataError(f"{where}/{METADATA_FILE}: does not hold line {index} of the prompt file")
        names = [p.name for p in samples]
        if not names or names != [f"{n:04d}.png" for n in range(len(names))]:
            raise DataError(f"{where}/{SAMPLES_DIR}: expected 0000.png, 0001.png, ..., found {names}")
        if samples_per_prompt is not None and len(names) != samples_per_prompt:
            raise DataError(f"{where}/{SAMPLES_DIR}: expected {samples_per_prompt} samples, found {len(names)}")
        for sample in samples:
            with Image.open(sample) as image:
                if image.format != "PNG":
                    raise DataError(f"{sample}: not a PNG file ({image.format})")
    if prompts is not None and count != len(prompts):
        raise DataError(f"{out_dir}: {count} prompt folders for {len(prompts)} prompts")
    return count


def relative_position(a: Detection, b: Detection, threshold: float = POSITION_THRESHOLD) -> set[str]:
    """The relations of `a` to `b` ("left of", "right of", "above", "below"), GenEval's way:
    the centre offset, shrunk by `threshold` times both boxes' sizes, must point mostly
    along an axis."""
    centre_a = ((a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2)
    centre_b = ((b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2)
    sizes = (a.box[2] - a.box[0] + b.box[2] - b.box[0], a.box[3] - a.box[1] + b.box[3] - b.box[1])
    offset = (centre_a[0] - centre_b[0], centre_a[1] - centre_b[1])
    revised = [math.copysign(max(abs(o) - threshold * abs(s), 0.0), o) for o, s in zip(offset, sizes)]
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = math.hypot(*offset)
    dx, dy = revised[0] / norm, revised[1] / norm
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def judge(metadata: dict[str, Any], detections: dict[str, list[Detection]]) -> tuple[bool, str]:
    """(correct, reasons) of one image under GenEval's rules; `detections` maps a class to
    its detections, most confident first."""
    correct, reasons = True, []
    matched: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = detections.get(name, [])[:count]
        ok = len(found) >= count
        if not ok:
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        elif "color" in clause and sum(d.colour == clause["color"] for d in found) < count:
            ok = False
            colours = ", ".join(sorted({str(d.colour) for d in found}))
            reasons.append(f"expected {clause['color']} {name}>={count}, found colours {colours}")
        if ok and "position" in clause:
            relation, target = clause["position"]
            targets = matched[target] if target < len(matched) else None
            if targets is None:
                ok = False
                reasons.append(f"no target for {name} to be {relation}")
            else:
                actual = [relative_position(obj, t) for obj in found for t in targets]
                wrong = next((relations for relations in actual if relation not in relations), None)
                if wrong is not None:
                    ok = False
                    reasons.append(f"expected {name} {relation} target, found {' and '.join(sorted(wrong)) or 'no relation to the'} target")
        correct &= ok
        matched.append(found if ok else None)
    for clause in metadata.get("exclude", []):
        found = detections.get(clause["class"], [])
        if len(found) >= clause["count"]:
            correct = False
            reasons.append(f"expected {clause['class']}<{clause['count']}, found {len(found)}")
    return correct, "\n".join(reasons)


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """GenEval's summary of per-image records (each with `tag`, `prompt` and `correct`):
    per-tag accuracy, the overall score (mean over tags), correct images and prompts."""
    by_tag: dict[str, list[bool]] = defaultdict(list)
    by_prompt: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        by_tag[record["tag"]].append(bool(record["correct"]))
        by_prompt[f"{record['tag']}|{record['prompt']}"].append(bool(record["correct"]))
    tags = {tag: sum(values) / len(values) for tag, values in by_tag.items()}
    return {
        "overall": sum(tags.values()) / len(tags) if tags else 0.0,
        "tags": tags,
        "correct_images": sum(bool(r["correct"]) for r in records) / len(records) if records else 0.0,
        "correct_prompts": sum(any(v) for v in by_prompt.values()) / len(by_prompt) if by_prompt else 0.0,
        "images": len(records),
        "prompts": len(by_prompt),
    }
