"""The recipe schema. Each dataclass field is one recipe key; its docstring-like `help`
metadata is what the docs' recipe reference shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from modal_core.errors import RecipeError


def _key(
    default: Any = None,
    help: str = "",
    factory: Any = None,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> Any:
    """One recipe key. `choices`, `minimum` (inclusive), `above` (exclusive) and `maximum`
    (inclusive) are checked by `check_values` when the recipe loads."""
    metadata = {"help": help, "choices": choices, "minimum": minimum, "above": above, "maximum": maximum}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


GUIDANCE_SCHEDULES = ("constant", "linear")
"""`generation.cfg_schedule` and `preference.cfg_schedule` (= `generation.settings.GUIDANCE_SCHEDULES`,
which config does not import: it imports nothing above it; a test holds the two equal)."""


@dataclass
class TokenizerTrainConfig:
    """How to train a text tokenizer when `tokenizer.path` is not given."""

    corpus: str = _key("shapes_text", "Name of a data set whose text trains the tokenizer (`shapes_text`: the built-in corpus).")
    num_sentences: int = _key(20000, "Number of corpus sentences to train on (built-in corpus).", minimum=1)
    options: dict[str, Any] = _key(help="Further options of the corpus data set (e.g. `path` for `jsonl_text`).", factory=dict)
    vocab_size: int = _key(512, "Target vocabulary size (special tokens included).", minimum=1)


@dataclass
class TokenizerConfig:
    """The text tokenizer."""

    path: Optional[str] = _key(None, "Directory holding `tokenizer.json` (a Hugging Face fast tokenizer). Null: train one.")
    train: TokenizerTrainConfig = _key(help="Training settings used when `path` is null.", factory=TokenizerTrainConfig)
    special_tokens: list[str] = _key(
        help="Extra special tokens beyond those of the enabled modalities (e.g. reserve image tokens in a text-only stage).",
        factory=list,
    )


@dataclass
class BackboneConfig:
    """The shared autoregressive transformer (any Hugging Face causal LM)."""

    path: Optional[str] = _key(None, "Local directory of a Hugging Face causal LM to load. Null: build from `config`.")
    model_type: str = _key("llama", "transformers model type used when building from `config`.")
    config: dict[str, Any] = _key(
        help="Keyword arguments of the transformers config (hidden_size, num_hidden_layers, ...). "
        "`vocab_size` defaults to the tokenizer's size.",
        factory=dict,
    )
    dtype: str = _key(
        "float32",
        "Weight dtype when loading from `path` or `init_from` (float32, bfloat16, float16); bfloat16 halves the "
        "memory of a frozen backbone under LoRA.",
        choices=("float32", "bfloat16", "float16"),
    )
    embedding_init_std: Optional[float] = _key(
        None,
        "Standard deviation of the token embeddings of a backbone built from `config` (null: the config's "
        "`initializer_range`, Llama's 0.02, sized for hidden 4096); a tied output layer shares them. Ignored when weights "
        "load from `path` or `init_from`.",
        above=0,
    )


@dataclass
class ChatConfig:
    """Chat-format text the collator adds (training and inference alike)."""

    system_prompt: str = _key("", "Text before chats that draw nothing and bring no system prompt of their own (Janus: its system prompt).")
    media_separator: str = _key(
        "",
        "Text after every input-modality item, e.g. an image, unless the text after it starts with whitespace (official Janus: a newline).",
    )


@dataclass
class LoraConfig:
    """LoRA on the backbone: low-rank factors train, the backbone's weights stay frozen."""

    rank: int = _key(
        0,
        "Rank r of each low-rank update (0: no LoRA). With r > 0 the factors of every `targets` layer train in "
        "addition to the `train:` groups, which must then not include `backbone`.",
        minimum=0,
    )
    alpha: float = _key(16.0, "Scale of the update: a layer computes `x W^T + alpha / r * x A^T B^T`.", above=0)
    dropout: float = _key(0.0, "Dropout on the input of the low-rank branch during training.", minimum=0, maximum=1)
    targets: list[str] = _key(
        help="Names (last component) of the backbone's linear layers to adapt; the LM head is never adapted.",
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )


@dataclass
class DataSourceConfig:
    """One data set in the task mix."""

    dataset: str = _key("???", "Registered data set name (see `modal-core plugins`).")
    weight: float = _key(1.0, "Relative sampling weight in the mix (the Janus data ratio).", above=0)
    options: dict[str, Any] = _key(help="Keyword options passed to the data set factory.", factory=dict)


@dataclass
class DataConfig:
    """Training data: a mix of data sets, batching and sequence limits."""

    sources: list[DataSourceConfig] = _key(help="The data sets to mix.", factory=list)
    batch_size: int = _key(8, "Samples per optimizer step and device (before gradient accumulation).", minimum=1)
    max_length: int = _key(512, "Longest sequence in tokens; a longer sample is a bad sample (see `on_bad_sample`).", minimum=1)
    packing: bool = _key(
        False,
        "Pack each batch's samples into as few rows of `max_length` as fit (first-fit decreasing), attention confined to "
        "each sample and positions restarting per sample; `batch_size` still counts samples, and losses are unchanged.",
    )
    cfg_dropout: float = _key(
        0.1, "Probability of replacing a generation sample's text condition by padding (for CFG).", minimum=0, maximum=1
    )
    num_workers: int = _key(
        0, "DataLoader worker processes; with WebDataset shards each worker of each device reads shards of its own.", minimum=0
    )
    val_samples: int = _key(0, "Held-out samples scored at each validation (0 disables validation).", minimum=0)
    on_bad_sample: str = _key(
        "raise",
        "`raise`: stop at a missing/corrupt/too-long sample with an error naming it; `skip`: drop it and log "
        "its source and the reason to `bad_samples.jsonl` in the run directory.",
        choices=("raise", "skip"),
    )


@dataclass
class OptimConfig:
    """Optimizer (AdamW) and learning-rate schedule."""

    lr: float = _key(1e-3, "Peak learning rate (0 leaves the weights as they are).", minimum=0)
    weight_decay: float = _key(0.0, "AdamW weight decay.", minimum=0)
    betas: list[float] = _key(help="AdamW betas.", factory=lambda: [0.9, 0.95])
    eps: float = _key(1e-8, "AdamW epsilon.", above=0)
    warmup_steps: int = _key(0, "Linear warm-up steps.", minimum=0)
    schedule: str = _key("constant", "After warm-up: `constant` or `cosine` (down to `min_lr_ratio` * lr).", choices=("constant", "cosine"))
    min_lr_ratio: float = _key(0.1, "Final learning rate of the cosine schedule, as a fraction of `lr`.", minimum=0, maximum=1)


@dataclass
class TrainerConfig:
    """Lightning trainer settings."""

    max_steps: int = _key(100, "Optimizer steps to train.", minimum=1)
    accelerator: str = _key("auto", "Lightning accelerator: auto, cpu, gpu.", choices=("auto", "cpu", "gpu", "cuda", "mps"))
    devices: Any = _key(1, "Devices per node (int, list, or 'auto').")
    num_nodes: int = _key(1, "Number of nodes.", minimum=1)
    strategy: str = _key(
        "auto",
        "Lightning strategy: `auto` (one device), `ddp`, `fsdp` (FSDP2: shards weights, gradients and optimizer "
        "states; GPUs with NCCL or CPU processes with gloo), "
        "`deepspeed_stage_2`, `deepspeed_stage_3` (need the deepspeed package). See docs/multi-gpu.md.",
        choices=("auto", "ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3"),
    )
    precision: str = _key(
        "32-true",
        "Lightning precision: 32-true (or 32), bf16-mixed, 16-mixed, bf16-true, 16-true. With `strategy: fsdp`, "
        "bf16-mixed keeps float32 weight shards, gathers and computes in bfloat16 and reduces gradients in float32.",
        choices=("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true"),
    )
    accumulate_grad_batches: int = _key(1, "Batches per optimizer step.", minimum=1)
    gradient_clip_val: Optional[float] = _key(1.0, "Clip the gradient norm to this value (null: no clipping).", above=0)
    activation_checkpointing: bool = _key(
        False,
        "Recompute each transformer block (the backbone's decoder layers and the blocks plugins declare) in the "
        "backward pass instead of storing its activations: less memory, about a third more compute.",
    )
    fsdp_sharding: str = _key(
        "FULL_SHARD",
        "With `strategy: fsdp`: FULL_SHARD (shard weights, gradients, optimizer), SHARD_GRAD_OP (keep weights "
        "whole), HYBRID_SHARD (shard within a node, replicate across nodes), NO_SHARD.",
        choices=("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"),
    )
    fsdp_state_dict: str = _key(
        "full",
        "With `strategy: fsdp`: `full` gathers each checkpoint into one safetensors file on rank 0; `sharded` "
        "lets every rank write its shard (consolidate with `modal-core export-checkpoint`).",
        choices=("full", "sharded"),
    )
    peak_tflops: Optional[float] = _key(
        None,
        "Peak dense TFLOP/s of one device at the training precision, for the `train/mfu` metric. Null: looked up "
        "in Lightning's table of accelerators (A100, H100, H200, L4, ...); no MFU is logged for unknown devices.",
        above=0,
    )
    log_every_n_steps: int = _key(
        10,
        "Log metrics every N steps: losses, learning rate, and tokens/s and MFU over the steps since the last log, to "
        "`history.jsonl` and the progress bar (only those steps compute them).",
        minimum=1,
    )
    val_every_n_steps: int = _key(0, "Validate every N steps (0: only when training ends, if `data.val_samples` > 0).", minimum=0)
    checkpoint_every_n_steps: int = _key(0, "Save a checkpoint every N steps (0: only at the end).", minimum=0)
    keep_last: int = _key(2, "How many step checkpoints to keep (-1: all).")
    keep_best: int = _key(
        0,
        "Also keep the N checkpoints with the best `monitor` value, saving one after every validation "
        "that enters the top N (0: none); `checkpoints/best` names the best.",
        minimum=0,
    )
    monitor: str = _key("val/loss", "Validation metric that ranks checkpoints for `keep_best`.")
    monitor_mode: str = _key("min", "`min` or `max`: which values of `monitor` are better.", choices=("min", "max"))
    progress_bar: bool = _key(True, "Show Lightning's progress bar.")


@dataclass
class RewardConfig:
    """One reward of preference tuning."""

    name: str = _key("???", "Registered reward name (see `modal-core plugins`), e.g. `shapes_checker`.")
    weight: float = _key(1.0, "Weight of this reward in the sum that ranks samples.")
    options: dict[str, Any] = _key(help="Keyword options passed to the reward's factory.", factory=dict)


@dataclass
class GuardConfig:
    """An understanding suite scored during preference tuning, to catch what tuning costs understanding."""

    suite: Optional[str] = _key(
        None, "Evaluator suite (see `modal-core eval --list`) scored at the start and every `every_n_steps`; null: no guard."
    )
    options: dict[str, Any] = _key(help="Options of the suite (as `modal-core eval -o key=value` gives them).", factory=dict)
    metric: str = _key("accuracy", "Key of the suite's result to watch (higher is better).")
    every_n_steps: int = _key(10, "Score the suite every N optimizer steps.", minimum=1)
    margin: float = _key(0.02, "Largest allowed drop of `metric` below its value at the start.", minimum=0)
    action: str = _key(
        "stop", "`stop`: end training when the drop exceeds `margin`; `report`: only log and record it.", choices=("stop", "report")
    )


@dataclass
class PreferenceConfig:
    """Preference and reward tuning of an output modality (GRPO, DPO); null `method`: plain training."""

    method: Optional[str] = _key(
        None,
        "`grpo`: sample groups of items per prompt, reward them, clipped policy gradient with a KL penalty; `dpo`: "
        "direct preference optimisation on chosen/rejected pairs. Null: supervised training as usual.",
        choices=("grpo", "dpo"),
    )
    modality: Optional[str] = _key(None, "Output modality to tune (null: the model's only one).")
    rewards: list[RewardConfig] = _key(help="Rewards whose weighted sum ranks samples (GRPO, and DPO's sampled pairs).", factory=list)
    group_size: int = _key(8, "Samples per prompt (GRPO's group; DPO: candidates of which the best and worst form a pair).", minimum=2)
    cfg_scale: float = _key(5.0, "Classifier-free guidance scale of the sampling policy (the one optimised).", minimum=0)
    cfg_schedule: str = _key(
        "constant",
        "How the policy's scale runs over the codes: `constant`, or `linear` from 1 at the first code to `cfg_scale` at "
        "the last (as `generation.cfg_schedule`); rollouts and log-probabilities use the same.",
        choices=GUIDANCE_SCHEDULES,
    )
    temperature: float = _key(1.0, "Sampling temperature of the policy.", above=0)
    clip: float = _key(0.2, "GRPO: clip range of the probability ratio.", above=0)
    kl_weight: float = _key(0.04, "GRPO: weight of the KL penalty to the reference model.", minimum=0)
    updates_per_rollout: int = _key(
        1, "GRPO: optimizer steps taken on each batch of samples (from the second on, the ratio clip binds).", minimum=1
    )
    beta: float = _key(0.1, "DPO: inverse temperature of the implicit reward.", above=0)
    pairs: Optional[str] = _key(
        None,
        'DPO: JSONL file of {"prompt", "chosen", "rejected"} image paths (relative to the file). Null: pairs come '
        "from samples of the model ranked by `rewards` (the best and the worst of each group).",
    )
    sft_weight: float = _key(
        1.0,
        "Weight of the next-token loss of the batch's samples that are not generation prompts (add understanding or "
        "text sources to `data.sources` to keep those skills while tuning).",
        minimum=0,
    )
    sample_every_n_steps: int = _key(
        10, "Save a PNG grid of rollouts to `rollouts/` in the run folder every N steps (0: never).", minimum=0
    )
    guard: GuardConfig = _key(help="Understanding guard.", factory=GuardConfig)


@dataclass
class GenerationConfig:
    """How the trained model draws when a call does not say (`modal-core generate`, `serve`,
    `eval`, `modal_core.load(...).generate`); stored with every checkpoint, and each
    setting can be overridden per call."""

    cfg: float = _key(5.0, "Classifier-free guidance scale (1 = none; Janus: 5).", minimum=0, maximum=100)
    cfg_schedule: str = _key(
        "constant",
        "`constant` (Janus) or `linear`: the scale rises from 1 at the first code to `cfg` at the last, so the first "
        "codes, which place the objects, are drawn unguided.",
        choices=GUIDANCE_SCHEDULES,
    )
    cfg_plausibility: Optional[float] = _key(
        None,
        "Null, or a in (0, 1]: only codes at least a times as probable under the prompt as its likeliest code may be "
        "drawn, and guidance reweights inside that set (contrastive decoding's plausibility constraint).",
        above=0,
        maximum=1,
    )
    temperature: float = _key(1.0, "Sampling temperature (0 = greedy).", minimum=0, maximum=10)
    top_k: Optional[int] = _key(None, "Sample among the k most likely codes (null: all).", minimum=1)
    top_p: Optional[float] = _key(None, "Nucleus sampling mass (null: all codes).", above=0, maximum=1)


@dataclass
class Recipe:
    """A training recipe: `modal-core train RECIPE.yaml key=value ...`."""

    description: str = _key("", "One line shown by `modal-core recipes`.")
    base: Optional[Any] = _key(None, "Path (relative to this file) of a recipe this one extends, or a list of them.")
    seed: int = _key(0, "Seed of every random choice (weights, data order, dropout).")
    modality_tokenizer: Optional[str] = _key(
        None,
        "Train this output modality's tokenizer (e.g. the name of an image VQ modality) on the media of `data.sources` "
        "instead of the unified model. Null: train the unified model.",
    )
    output_dir: str = _key("???", "Directory for checkpoints, logs and the resolved recipe.")
    overwrite: bool = _key(
        False,
        "Replace the run already in `output_dir` (its checkpoints, history and recipe are deleted first). "
        "Without it, a folder that holds a run is refused unless `resume` continues that run.",
    )
    init_from: Optional[str] = _key(
        None,
        "Checkpoint whose weights (and tokenizer) start this run, e.g. the previous stage. Parts the "
        "checkpoint lacks (a new modality) keep their fresh initialisation.",
    )
    resume: Optional[str] = _key(None, "Checkpoint directory to resume exactly (optimizer, schedule, data position, RNG).")
    tokenizer: TokenizerConfig = _key(help="The text tokenizer.", factory=TokenizerConfig)
    backbone: BackboneConfig = _key(help="The shared transformer.", factory=BackboneConfig)
    modalities: dict[str, Any] = _key(help="Modality name -> its options (schema given by the modality's plugin).", factory=dict)
    train: list[str] = _key(
        help="Parameter groups that train: backbone, encoders, adapters, heads, or one modality's part "
        "such as `adapters.<modality>`. Everything else is frozen.",
        factory=lambda: ["backbone", "adapters", "heads"],
    )
    lora: LoraConfig = _key(help="LoRA factors on the backbone's linear layers (one-GPU fine-tuning).", factory=LoraConfig)
    chat: ChatConfig = _key(
        help="Chat format added around samples (empty by default; converted Janus checkpoints set Janus's).", factory=ChatConfig
    )
    data: DataConfig = _key(help="Training data.", factory=DataConfig)
    optim: OptimConfig = _key(help="Optimizer and schedule.", factory=OptimConfig)
    trainer: TrainerConfig = _key(help="Trainer settings.", factory=TrainerConfig)
    preference: PreferenceConfig = _key(help="Preference tuning (GRPO, DPO) of an output modality.", factory=PreferenceConfig)
    generation: GenerationConfig = _key(help="The model's default guidance and sampling when it draws.", factory=GenerationConfig)


def check_values(recipe: Any, schema: type = Recipe, prefix: str = "") -> None:
    """Check every key's declared `choices` and bounds, then the rules that tie keys
    together; raise `RecipeError` naming the first key that breaks one."""
    for item in fields(schema):
        value = recipe.get(item.name)
        key = f"{prefix}{item.name}"
        if item.type in _SECTIONS:
            check_values(value, _SECTIONS[item.type], f"{key}.")
        elif item.type in _LISTS:
            for index, entry in enumerate(value):
                check_values(entry, _LISTS[item.type], f"{key}[{index}].")
        elif value is not None:
            _check_value(key, value, item.metadata)
    if schema is Recipe:
        _check_rules(recipe)


def _check_value(key: str, value: Any, rules: Mapping[str, Any]) -> None:
    choices = rules.get("choices")
    if choices is not None and str(value) not in choices:
        raise RecipeError(f"{key}: {value!r} is not allowed; expected one of {', '.join(choices)}")
    if rules.get("minimum") is not None and value < rules["minimum"]:
        raise RecipeError(f"{key}: must be >= {rules['minimum']:g}, got {value}")
    if rules.get("above") is not None and value <= rules["above"]:
        raise RecipeError(f"{key}: must be > {rules['above']:g}, got {value}")
    if rules.get("maximum") is not None and value > rules["maximum"]:
        raise RecipeError(f"{key}: must be <= {rules['maximum']:g}, got {value}")


def _check_rules(recipe: Any) -> None:
    trainer = recipe.trainer
    if trainer.keep_last == 0 or trainer.keep_last < -1:
        raise RecipeError(f"trainer.keep_last: must be >= 1 or -1 (keep all), got {trainer.keep_last}")
    if trainer.strategy == "fsdp" and str(trainer.precision) == "16-mixed":
        raise RecipeError("trainer.precision: 16-mixed is not available with strategy fsdp (FSDP2 keeps no loss scaler); use bf16-mixed")
    if trainer.strategy == "fsdp" and recipe.modality_tokenizer:
        raise RecipeError("trainer.strategy: fsdp shards the unified model only; train a modality_tokenizer with `ddp`")
    if recipe.preference.method and recipe.modality_tokenizer:
        raise RecipeError("preference.method tunes the unified model; it cannot be combined with modality_tokenizer")
    if recipe.preference.method == "grpo" and not recipe.preference.rewards:
        raise RecipeError("preference.rewards: GRPO needs at least one reward (see `modal-core plugins` for installed ones)")
    if recipe.preference.method == "dpo" and not recipe.preference.pairs and not recipe.preference.rewards:
        raise RecipeError("preference: DPO needs `pairs` (a preference file) or `rewards` to rank the model's own samples")
    if trainer.keep_best and not recipe.data.val_samples:
        raise RecipeError("trainer.keep_best needs validation: set data.val_samples > 0 (and trainer.val_every_n_steps)")


_SECTIONS = {
    cls.__name__: cls
    for cls in (
        TokenizerTrainConfig,
        TokenizerConfig,
        BackboneConfig,
        ChatConfig,
        LoraConfig,
        DataConfig,
        OptimConfig,
        TrainerConfig,
        GuardConfig,
        PreferenceConfig,
        GenerationConfig,
    )
}
"""Section dataclasses by the names fields give as their types (strings, with postponed annotations)."""
_LISTS = {"list[DataSourceConfig]": DataSourceConfig, "list[RewardConfig]": RewardConfig}
"""Sections that are lists of entries, by their field type."""
