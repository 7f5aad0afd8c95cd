"""modal-core's decode engine against Hugging Face's Janus `generate`, same weights, same run.

For each size a random transformers `JanusForConditionalGeneration` is built from config
and converted with `modal_core_images.janus.from_hf_janus`; both then draw the same number of
image tokens with the same CFG scale (5) and temperature (1) from the same prompt
tokens, and answer with the same number of greedy text tokens. Prints images/s and
tokens/s for both and the ratio, prefill and per-token latency, peak memory, and the
memory-bandwidth floor (bytes every step reads over the device's measured read
bandwidth) with the fraction of it each reaches; writes
`generation.json`, `generation.png` and `generation.html` to `--out`.

`--decoding ar sjd zipar` compares decoding methods of the engine instead (see
`decoding_benchmark`): forward passes and seconds per image, ratios against `ar`
measured in the same run, on the random sizes; with `--checkpoint` (a shapes
quickstart checkpoint) also quality: the shapes checker's accuracy over `--seeds`
seeds and the distance of each method's code distribution to `ar`'s.

Run: `python benchmarks/generation.py` (or `make bench`); `--threads 1` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bandwidth_floor import decode_floor, read_bandwidth, synchronize  # noqa: E402
from janus_models import SIZES, JanusPair, janus_pair  # noqa: E402

from modal_core.data.chat import caption_to_image, question_answer  # noqa: E402
from modal_core.generation.engine import DecodeEngine  # noqa: E402
from modal_core.generation.pipeline import Pipeline  # noqa: E402

CAPTION = "a red circle left of a blue square"
QUESTION = "describe the picture in detail"
GENERATION = "vq_generation"
CFG = 5.0


class PeakMemory:
    """Peak memory growth (bytes) while the block runs: allocator peak on CUDA, resident
    set size sampled every millisecond on CPU (torch keeps no CPU statistics)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._running = device, 0, False

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self._rss()
        self._running, self._top = True, self._base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
            return
        self._running = False
        self._thread.join()
        self.peak = max(self._top, self._rss()) - self._base

    def _sample(self) -> None:
        while self._running:
            self._top = max(self._top, self._rss())
            time.sleep(0.001)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096


class ForwardClock:
    """Times each call of the language model: prefill = start to the first decode
    forward, per token = the rest divided by the decode forwards."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.starts = module, []

    def __enter__(self) -> ForwardClock:
        self.starts.clear()
        self._begin = time.perf_counter()
        self._hook = self.module.register_forward_pre_hook(lambda *_: self.starts.append(time.perf_counter()))
        return self

    def __exit__(self, *exc) -> None:
        self.end = time.perf_counter()
        self._hook.remove()

    def latencies(self) -> tuple[float, float]:
        prefill = self.starts[1] - self._begin if len(self.starts) > 1 else self.end - self._begin
        decode_steps = max(len(self.starts) - 1, 1)
        return prefill, (self.end - self.starts[min(1, len(self.starts) - 1)]) / decode_steps


def measure(run: Callable[[], object], clock_module: torch.nn.Module | None, device: torch.device) -> dict:
    """Seconds, prefill and per-token latency (when `clock_module` is given), peak memory."""
    synchronize(device)
    with PeakMemory(device) as memory:
        if clock_module is None:
            start = time.perf_counter()
            run()
            synchronize(device)
            seconds, prefill, per_token = time.perf_counter() - start, None, None
        else:
            with ForwardClock(clock_module) as clock:
                run()
                synchronize(device)
            seconds = clock.end - clock._begin
            prefill, per_token = clock.latencies()
    return {"seconds": seconds, "prefill_s": prefill, "per_token_s": per_token, "peak_memory_bytes": memory.peak}


def interleaved(contenders: dict[str, Callable[[], dict]], repeats: int) -> dict[str, dict]:
    """The fastest of `repeats` measurements per contender (load from other processes
    only ever slows a run down), taken in turns after one warm-up each, so that load
    hits all of them alike; the median is kept too."""
    for measure_once in contenders.values():
        measure_once()
    samples: dict[str, list[dict]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, measure_once in contenders.items():
            samples[name].append(measure_once())
    result = {}
    for name, runs in samples.items():
        runs.sort(key=lambda r: r["seconds"])
        result[name] = {**runs[0], "median_seconds": runs[len(runs) // 2]["seconds"], "runs_seconds": [r["seconds"] for r in runs]}
    return result


def image_benchmark(pair: JanusPair, batch: int, parallel: int, repeats: int, compile_mode: str | None, bandwidth: float) -> dict:
    pipeline, reference, tokens = pair.pipeline, pair.reference, pair.image_tokens
    device = next(reference.parameters()).device
    prompts = [caption_to_image(CAPTION, None, GENERATION)] * batch
    ids = pipeline.collator.left_padded(prompts)  # the same prompt tokens for both
    engine = DecodeEngine(pipeline.model)

    def hf(do_sample: bool = True) -> torch.Tensor:
        # Greedy search allows one sequence per row: repeat the rows instead (same batch).
        copies, sequences = (1, parallel) if do_sample else (parallel, 1)
        with torch.no_grad():
            return reference.generate(
                input_ids=ids.input_ids.repeat_interleave(copies, 0).to(device),
                attention_mask=ids.attention_mask.repeat_interleave(copies, 0).to(device), generation_mode="image",
                do_sample=do_sample, temperature=1.0, guidance_scale=CFG, num_return_sequences=sequences,
            )  # fmt: skip

    def ours(engine: DecodeEngine = engine, temperature: float = 1.0) -> torch.Tensor:
        return engine.generate_codes(pipeline.collator, prompts, GENERATION, tokens, parallel, CFG, temperature, seed=0)

    # The greedy decode that is checked against transformers' also counts the bytes it reads.
    rows, prompt = 2 * batch * parallel, ids.input_ids.shape[1]
    floor, greedy = decode_floor(lambda: ours(temperature=0.0), pipeline.model, rows, prompt, tokens, bandwidth)
    same = torch.equal(hf(do_sample=False).cpu(), greedy.cpu())
    contenders = {
        "hf": lambda: measure(hf, reference.model.language_model, device),
        "ours": lambda: measure(ours, pipeline.model.backbone.base_model, device),
    }
    if compile_mode is not None:
        compiled = DecodeEngine(pipeline.model, compile_mode=compile_mode)
        contenders["ours_compiled"] = lambda: measure(lambda: ours(compiled), None, device)
    results = interleaved(contenders, repeats)
    for row in results.values():
        row["images_per_s"] = batch * parallel / row["seconds"]
    if "ours_compiled" in results:
        # A hook on the compiled step's modules would make dynamo recompile: its prefill is
        # the eager engine's (the same uncompiled code), its per-token time the rest.
        compiled, prefill = results["ours_compiled"], results["ours"]["prefill_s"]
        compiled["prefill_s"], compiled["per_token_s"] = prefill, (compiled["seconds"] - prefill) / max(tokens - 1, 1)
    _against_floor(results, floor)
    return {"task": "image", "batch": batch, "parallel": parallel, "tokens": tokens, "greedy_codes_equal": same, "floor": floor, **results}


def decoding_benchmark(pipeline: Pipeline, tokens: int, parallel: int, methods: list[str], repeats: int, compile_mode: str | None) -> dict:
    """Each decoding method on the same prompt, CFG and temperature 1: forward passes
    per call (mean over the measured runs, which use seeds 0, 1, ...) and the fastest
    of `repeats` interleaved timings."""
    device = next(pipeline.model.parameters()).device
    prompts = [caption_to_image(CAPTION, None, GENERATION)]
    engines = {method: DecodeEngine(pipeline.model, compile_mode=compile_mode) for method in methods}
    passes: dict[str, list[int]] = {method: [] for method in methods}

    def contender(method: str) -> Callable[[], dict]:
        def run() -> None:
            engine = engines[method]
            engine.generate_codes(
                pipeline.collator, prompts, GENERATION, tokens, parallel, CFG, 1.0, seed=len(passes[method]), decoding=method
            )
            passes[method].append(engine.passes)

        return lambda: measure(run, None, device)

    results = interleaved({method: contender(method) for method in methods}, repeats)
    for method, row in results.items():
        row["passes"] = sum(passes[method]) / len(passes[method])
        row["seconds_per_image"] = row["seconds"] / parallel
    return {"task": "decoding", "batch": 1, "parallel": parallel, "tokens": tokens, **results}


def decoding_quality(checkpoint: Path, methods: list[str], seeds: int, device: str, out: Path) -> dict:
    """On a shapes checkpoint: per method, the checker's accuracy (mean and spread over
    `seeds` seeds of `evaluate_generation`, 2 images per prompt), the mean forward
    passes, and the total-variation distance between the method's code frequencies and
    `ar`'s (codes drawn for the single-object prompts, all seeds); `ar_vs_ar` is that
    distance between `ar`'s even and odd seeds, the noise floor of the comparison.
    Seed 0's images of each method go to `out/decoding-METHOD.png`, with the checker's verdicts.
    `one_image`: passes and seconds per call at one image per call (seeds 0, 1, ... over
    the single-object prompts, timed in turn, not interleaved)."""
    from modal_core_images.evaluation.shapes_eval import evaluate_generation, save_generation_grid
    from modal_core_images.quickstart import QUICKSTART_CFG
    from modal_core_images.shapes import COLOURS, SHAPES, describe

    pipeline = Pipeline.load(checkpoint, device=device)
    name = pipeline.modality("output")
    positions = pipeline.modalities[name].num_positions
    prompts = [caption_to_image(describe(colour, shape), None, name) for colour in COLOURS for shape in SHAPES]
    settings = pipeline.settings(cfg=QUICKSTART_CFG)  # the checkpoint's own schedule and plausibility
    guidance = {"cfg_schedule": settings.cfg_schedule, "cfg_plausibility": settings.cfg_plausibility}
    report: dict = {"checkpoint": str(checkpoint), "seeds": seeds, "settings": settings.as_dict(), "methods": {}}
    histograms: dict[str, list[torch.Tensor]] = {}  # method -> the codes of each seed
    for method in methods:
        accuracy, two_object, passes, histograms[method] = [], [], [], []
        for seed in range(seeds):
            result = evaluate_generation(pipeline, 2, seed=seed, decoding=method, **settings.as_overrides())
            accuracy.append(result.accuracy)
            if seed == 0:
                save_generation_grid(result, out / f"decoding-{method.replace(':', '-')}.png")
            two_object.append(result.two_object_accuracy)
            codes = pipeline.engine.generate_codes(
                pipeline.collator, prompts, name, positions, 2, settings.cfg, *settings.sampling, seed, method, **guidance
            )
            passes.append(pipeline.engine.passes)
            histograms[method].append(codes.flatten().cpu())
        one_passes, one_seconds = [], []
        for index, prompt in enumerate(prompts):
            start = time.perf_counter()
            pipeline.engine.generate_codes(
                pipeline.collator, [prompt], name, positions, 1, settings.cfg, *settings.sampling, index, method, **guidance
            )
            one_seconds.append(time.perf_counter() - start)
            one_passes.append(pipeline.engine.passes)
        report["methods"][method] = {
            "accuracy": accuracy, "two_object_accuracy": two_object, "passes_per_call": sum(passes) / len(passes),
            "images_per_call": 2 * len(prompts),
            "one_image": {"passes": sum(one_passes) / len(one_passes), "seconds": sum(one_seconds) / len(one_seconds)},
        }  # fmt: skip

    codebook = 1 + max(int(codes.max()) for drawn in histograms.values() for codes in drawn)

    def distance(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
        a, b = (torch.bincount(torch.cat(codes), minlength=codebook).double() for codes in (first, second))
        return 0.5 * float((a / a.sum() - b / b.sum()).abs().sum())

    reference = histograms["ar"]
    report["ar_vs_ar"] = distance(reference[0::2], reference[1::2])
    for method in methods:
        # Same number of seeds on both sides as in ar_vs_ar: the method's even seeds against ar's odd ones.
        report["methods"][method]["code_tv_vs_ar"] = distance(histograms[method][0::2], reference[1::2])
    return report


def answer_benchmark(pair: JanusPair, batch: int, new_tokens: int, repeats: int, bandwidth: float) -> dict:
    pipeline, reference = pair.pipeline, pair.reference
    device = next(reference.parameters()).device
    prompts = [question_answer(QUESTION, None)] * batch
    ids = pipeline.collator.left_padded(prompts)
    engine = DecodeEngine(pipeline.model)

    def hf() -> list[list[int]]:
        with torch.no_grad():
            out = reference.generate(
                input_ids=ids.input_ids.to(device), attention_mask=ids.attention_mask.to(device), do_sample=False,
                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            )  # fmt: skip
        return out[:, ids.input_ids.shape[1] :].tolist()

    def ours() -> list[list[int]]:
        return engine.generate_text(pipeline.collator, prompts, max_new_tokens=new_tokens, temperature=0.0)

    floor, greedy = decode_floor(ours, pipeline.model, batch, ids.input_ids.shape[1], new_tokens, bandwidth)
    same = hf() == greedy
    results = interleaved(
        {
            "hf": lambda: measure(hf, reference.model.language_model, device),
            "ours": lambda: measure(ours, pipeline.model.backbone.base_model, device),
        },
        repeats,
    )
    for row in results.values():
        row["tokens_per_s"] = batch * new_tokens / row["seconds"]
    _against_floor(results, floor)
    return {"task": "answer", "batch": batch, "parallel": 1, "tokens": new_tokens, "greedy_tokens_equal": same, "floor": floor, **results}


def _against_floor(results: dict[str, dict], floor: dict) -> None:
    """Each contender's fraction of the floor's speed (1 = as fast as reading the bytes allows)."""
    for row in results.values():
        row["of_floor"] = floor["seconds"] / row["seconds"]


def _print_decoding(size: str, row: dict) -> None:
    ar = row.get("ar")
    for method in (name for name in row if isinstance(row[name], dict)):
        result = row[method]
        ratios = (
            f" | vs ar: {ar['passes'] / result['passes']:5.2f}x fewer passes, {ar['seconds'] / result['seconds']:5.2f}x speed" if ar else ""
        )
        print(
            f"{size:8} p={row['parallel']:<2} {method:8} passes/call {result['passes']:7.1f} (of {row['tokens']} codes)"
            f"  s/image {result['seconds_per_image']:8.3f} (median {result['median_seconds'] / row['parallel']:.3f})"
            f"  ms/pass {1e3 * result['seconds'] / result['passes']:7.1f}{ratios}"
        )


def _print_quality(report: dict) -> None:
    methods = report["methods"]
    drawn = ", ".join(f"{key} {value}" for key, value in report["settings"].items())
    print(f"quality on {report['checkpoint']} ({report['seeds']} seeds; {drawn}); ar vs ar code TV {report['ar_vs_ar']:.4f}")
    for method, row in methods.items():
        accuracy = torch.tensor(row["accuracy"])
        spread = float(accuracy.std()) if len(accuracy) > 1 else 0.0
        print(
            f"  {method:8} accuracy {float(accuracy.mean()):.3f} +- {spread:.3f} (seeds: {', '.join(f'{a:.3f}' for a in row['accuracy'])})"
            f"  two-object {sum(row['two_object_accuracy']) / len(row['two_object_accuracy']):.3f}"
            f"  passes/call {row['passes_per_call']:.1f} ({row['images_per_call']} images)  code TV vs ar {row['code_tv_vs_ar']:.4f}"
            f"  | one image per call: passes {row['one_image']['passes']:.1f}, s {row['one_image']['seconds']:.3f}"
        )


def _print(size: str, row: dict) -> None:
    unit = "images_per_s" if row["task"] == "image" else "tokens_per_s"
    hf, ours = row["hf"], row["ours"]
    same = row.get("greedy_codes_equal", row.get("greedy_tokens_equal"))
    compiled = row.get("ours_compiled")
    compiled_rate = f" compiled {compiled[unit]:9.2f} ({compiled[unit] / hf[unit]:4.2f}x)" if compiled else ""
    compiled_token = f" compiled {1e3 * compiled['per_token_s']:6.2f}" if compiled else ""
    floor, fastest = row["floor"], compiled or ours
    per_image = ""
    if row["task"] == "image":
        floor_per_image = floor["seconds"] / (row["batch"] * row["parallel"])
        per_image = f" | s/image hf {1 / hf[unit]:.3f} ours {1 / fastest[unit]:.3f} floor {floor_per_image:.3f}"
    read_mb, bandwidth_gb = (floor["weight_bytes_per_token"] + floor["kv_bytes_per_token"]) / 1e6, floor["bandwidth_bytes_per_s"] / 1e9
    floor_text = (
        f" | floor {1e3 * floor['seconds'] / row['tokens']:6.2f} ms/token ({read_mb:.1f} MB at {bandwidth_gb:.0f} GB/s):"
        f" hf at {hf['of_floor']:.0%} of it, ours {fastest['of_floor']:.0%}"
    )
    print(
        f"{size:6} {row['task']:6} b={row['batch']} p={row['parallel']:<2} {unit:>12}: hf {hf[unit]:9.2f}  ours {ours[unit]:9.2f}  "
        f"ratio {ours[unit] / hf[unit]:5.2f}x{compiled_rate}"
        f" | prefill ms hf {1e3 * hf['prefill_s']:7.1f} ours {1e3 * ours['prefill_s']:7.1f}"
        f" | per token ms hf {1e3 * hf['per_token_s']:6.2f} ours {1e3 * ours['per_token_s']:6.2f}{compiled_token}"
        f" | peak MiB hf {hf['peak_memory_bytes'] / 2**20:6.1f} ours {ours['peak_memory_bytes'] / 2**20:6.1f}"
        f"{per_image}{floor_text} | same greedy {same}"
    )


def write_report(report: dict, out: Path) -> None:
    """generation.json, and our speed-up per case (eager and compiled) as a PNG bar chart
    and an HTML table with each contender's fraction of the bandwidth floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "generation.json").write_text(json.dumps(report, indent=2))
    labels, eager, compiled, table = [], [], [], []
    for row in report["results"]:
        unit = "images_per_s" if row["task"] == "image" else "tokens_per_s"
        label = f"{row['size']} {row['task']} b{row['batch']} p{row['parallel']}"
        labels.append(label.replace(" b", "\nb"))
        eager.append(row["ours"][unit] / row["hf"][unit])
        compiled.append(row["ours_compiled"][unit] / row["hf"][unit] if "ours_compiled" in row else 0.0)
        cells = [label, f"{eager[-1]:.2f}x", f"{compiled[-1]:.2f}x" if compiled[-1] else "-"]
        cells += [f"{row[name]['of_floor']:.0%}" if name in row else "-" for name in ("hf", "ours", "ours_compiled")]
        table.append("".join(f"<td>{cell}</td>" for cell in cells))
    positions = range(len(labels))
    figure, axis = plt.subplots(figsize=(1.3 * len(labels) + 2, 3.2))
    axis.bar([x - 0.2 for x in positions], eager, width=0.4, color="tab:blue", label="engine")
    axis.bar([x + 0.2 for x in positions], compiled, width=0.4, color="tab:green", label="engine, compiled step")
    axis.set_xticks(list(positions), labels)
    axis.axhline(1.0, color="grey", linewidth=1)
    axis.axhline(2.0, color="tab:red", linestyle="--", linewidth=1, label="target 2x")
    axis.set_ylabel("ours / Hugging Face")
    axis.set_title(f"decode speed-up, {report['device']}, {report['dtype']}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "generation.png", dpi=110)
    plt.close(figure)
    columns = ("case", "engine / HF", "compiled / HF", "HF of floor", "engine of floor", "compiled of floor")
    header = "".join(f"<th>{name}</th>" for name in columns)
    (out / "generation.html").write_text(
        "<!doctype html><meta charset=utf-8><title>modal-core decode speed</title>"
        f"<h1>Decode speed-up over Hugging Face Janus generate</h1><img src='generation.png'>"
        f"<table border=1><tr>{header}</tr>{''.join(f'<tr>{cells}</tr>' for cells in table)}</table>"
        f"<p>Floor: bytes read per step at the measured read rate ({report['read_bandwidth_bytes_per_s'] / 1e9:.0f} GB/s). "
        f"Numbers: <a href='generation.json'>generation.json</a>; command: <code>{report['command']}</code></p>"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=1, help="prompts per call")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4], help="images per prompt")
    parser.add_argument("--tasks", nargs="+", default=["image", "answer"], choices=["image", "answer"], help="what to time")
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--compile", default="default", metavar="MODE", help="also time the engine with torch.compile(mode=MODE); 'none' to skip"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-generation"))
    parser.add_argument(
        "--decoding", nargs="+", default=None, metavar="METHOD", help="compare these decoding methods (e.g. ar sjd zipar) instead"
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="with --decoding: a shapes checkpoint for the quality numbers")
    parser.add_argument("--seeds", type=int, default=3, help="with --checkpoint: seeds of the quality evaluation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bandwidth = read_bandwidth(device)
    compile_mode = None if args.compile == "none" else args.compile
    report = {
        "command": " ".join(["python", *sys.argv]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "read_bandwidth_bytes_per_s": bandwidth,
        "results": [],
    }
    if args.decoding:
        decoding_main(args, report, compile_mode)
        return
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as root:
            pair = janus_pair(size, Path(root), dtype=getattr(torch, args.dtype), device=args.device)
            for parallel in args.parallel if "image" in args.tasks else ():
                row = {"size": size, **image_benchmark(pair, args.batch, parallel, args.repeats, compile_mode, bandwidth)}
                _print(size, row)
                report["results"].append(row)
            if "answer" in args.tasks:
                row = {"size": size, **answer_benchmark(pair, args.batch, args.answer_tokens, args.repeats, bandwidth)}
                _print(size, row)
                report["results"].append(row)
    write_report(report, args.out)
    print(f"wrote {args.out}/generation.json, generation.png, generation.html")


def decoding_main(args: argparse.Namespace, report: dict, compile_mode: str | None) -> None:
    """`--decoding`: speed per random size and images per prompt, then quality on `--checkpoint`."""
    methods = ["ar", *(method for method in args.decoding if method != "ar")]  # ar first: the reference
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as root:
            pair = janus_pair(size, Path(root), dtype=getattr(torch, args.dtype), device=args.device)
            for parallel in args.parallel:
                row = {"size": size, **decoding_benchmark(pair.pipeline, pair.image_tokens, parallel, methods, args.repeats, compile_mode)}
                _print_decoding(size, row)
                report["results"].append(row)
    if args.checkpoint is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report["quality"] = decoding_quality(args.checkpoint, methods, args.seeds, args.device, args.out)
        _print_quality(report["quality"])
    write_decoding_report(report, args.out)
    print(f"wrote {args.out}/decoding.json, decoding.png")


def write_decoding_report(report: dict, out: Path) -> None:
    """decoding.json, and per case each method's passes and speed relative to `ar` as a PNG bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "decoding.json").write_text(json.dumps(report, indent=2))
    rows = report["results"]
    methods = [name for name in rows[0] if isinstance(rows[0][name], dict) and name != "ar"] if rows else []
    figure, axes = plt.subplots(1, 2, figsize=(2.2 * max(len(rows), 1) + 3, 3.2))
    width = 0.8 / max(len(methods), 1)
    for index, method in enumerate(methods):
        positions = [x + (index - (len(methods) - 1) / 2) * width for x in range(len(rows))]
        axes[0].bar(positions, [row["ar"]["passes"] / row[method]["passes"] for row in rows], width=width, label=method)
        axes[1].bar(positions, [row["ar"]["seconds"] / row[method]["seconds"] for row in rows], width=width, label=method)
    labels = [f"{row['size']} p{row['parallel']}" for row in rows]
    for axis, title in zip(axes, ("fewer passes than ar", "speed-up over ar (wall clock)"), strict=True):
        axis.set_xticks(list(range(len(rows))), labels)
        axis.axhline(1.0, color="grey", linewidth=1)
        axis.set_title(title)
        axis.legend()
    figure.suptitle(f"decoding methods, {report['device']}, {report['dtype']}")
    figure.tight_layout()
    figure.savefig(out / "decoding.png", dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
