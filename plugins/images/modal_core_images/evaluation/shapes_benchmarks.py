"""Benchmark files in the formats of the `vqa`, `multiple_choice` and `pope` suites, made
from held-out shapes-world scenes, so that every understanding suite can be tried offline
(and a quickstart model scored on them)::

    python -m modal_core_images.evaluation.shapes_benchmarks DIR [--count 200]
    modal-core eval runs/quickstart/stage3 --suite vqa --data DIR --out runs/eval/vqa
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from modal_core_images.shapes import COLOURS, SHAPES, questions, render_scene, scene_for_index

IMAGE_DIR = "images"


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def write_shapes_benchmarks(out_dir: str | Path, count: int = 200, seed: int = 0, image_size: int = 32, grid: int | None = 8) -> Path:
    """Write `count` held-out scenes as PNGs plus `vqa.jsonl`, `multiple_choice.jsonl` and
    `pope.jsonl` (one record per scene each, POPE alternating yes and no) into
    `out_dir`; returns `out_dir`. `image_size` and `grid` should match the model's
    training data (the quickstart's: 32 and 8)."""
    out_dir = Path(out_dir)
    (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"shapes-benchmarks/{seed}")
    vqa, choice, pope = [], [], []
    for index in range(count):
        scene = scene_for_index(index, seed, "heldout", image_size=image_size, grid=grid)
        image = f"{IMAGE_DIR}/{index:05d}.png"
        render_scene(scene).save(out_dir / image)
        question, answer = rng.choice(questions(scene))
        vqa.append({"question_id": index, "image": image, "question": question, "answers": [answer]})
        pool = COLOURS if answer in COLOURS else SHAPES if answer in SHAPES else ("one", "two")
        options = [answer] + rng.sample([o for o in pool if o != answer], min(3, len(pool) - 1))
        rng.shuffle(options)
        choice.append({"id": index, "image": image, "question": question, "options": options, "answer": answer})
        present = {(obj.colour, obj.shape) for obj in scene.objects}
        if index % 2 == 0:
            colour, shape = sorted(present)[0]
        else:
            colour, shape = rng.choice([(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present])
        label = "yes" if (colour, shape) in present else "no"
        pope.append({"question_id": index, "image": image, "question": f"is there a {colour} {shape}?", "label": label})
    _write_jsonl(out_dir / "vqa.jsonl", vqa)
    _write_jsonl(out_dir / "multiple_choice.jsonl", choice)
    _write_jsonl(out_dir / "pope.jsonl", pope)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write")
    parser.add_argument("--count", type=int, default=200, help="scenes (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--image-size", type=int, default=32, help="image side in pixels (default 32, as the quickstart)")
    parser.add_argument("--grid", type=int, default=8, help="snap objects to this grid (default 8, as the quickstart; 0: off)")
    args = parser.parse_args()
    print(write_shapes_benchmarks(args.out, args.count, args.seed, args.image_size, args.grid or None))


if __name__ == "__main__":
    main()
