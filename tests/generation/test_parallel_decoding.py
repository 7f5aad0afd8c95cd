"""SJD and ZipAR in the decode engine: greedy SJD gives the autoregressive codes, sampled
SJD is distributed as autoregressive sampling, the cache after a rejection is the cache
of the codes kept, and ZipAR follows its schedule."""

from __future__ import annotations

import itertools

import pytest
import scipy.stats
import torch
from test_model import assembled  # noqa: F401  (fixture)

from modal_core.data.chat import caption_to_image
from modal_core.errors import ModelInputError
from modal_core.generation import parallel_decoding
from modal_core.generation.decoding import image_prompt_batch
from modal_core.generation.decoding_method import DecodingMethod
from modal_core.generation.engine import DecodeEngine, DecodeWorkspace, draw_tokens
from modal_core.generation.parallel_decoding import sjd_codes, zipar_schedule
from modal_core.generation.sampling import Guidance

GRID = 16  # a 4 x 4 grid of toy codes


def _prompts():
    return [caption_to_image("draw it", None, "toy_codes"), caption_to_image("a red circle what is it draw it", None, "toy_codes")]


@pytest.fixture
def varied(assembled):  # noqa: F811
    """The toy model with its matrices perturbed: the freshly initialised one's greedy
    codes settle into a cycle of 3 at once, where any decoding order agrees (this one: 7 codes)."""
    built, _, collator = assembled
    model = built.model.eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.add_(3.0 * parameter.std() * torch.randn(parameter.shape, generator=generator))
    return model, collator


@pytest.mark.parametrize("decoding", ["sjd", "sjd:3", "sjd:1", "zipar:4"])
def test_greedy_parallel_decoding_gives_the_autoregressive_codes(varied, decoding):
    model, collator = varied
    engine = DecodeEngine(model)
    args = (collator, _prompts(), "toy_codes", GRID)
    ar = engine.generate_codes(*args, images_per_prompt=2, cfg_scale=3.0, temperature=0.0, decoding="ar")
    assert engine.passes == GRID
    fast = engine.generate_codes(*args, images_per_prompt=2, cfg_scale=3.0, temperature=0.0, decoding=decoding)
    assert torch.equal(fast, ar)
    assert min(len(set(row)) for row in ar.tolist()) > 4  # codes vary: the comparison can fail


@pytest.mark.parametrize("decoding", ["sjd:3", "zipar:4"])
def test_greedy_parallel_decoding_follows_the_guidance_schedule_and_plausibility(varied, decoding):
    """Each parallel slot is guided with the scale of the code it draws, as in the ar loop."""
    model, collator = varied
    engine = DecodeEngine(model)
    args = (collator, _prompts(), "toy_codes", GRID)
    guidance = {"cfg_scale": 6.0, "cfg_schedule": "linear", "cfg_plausibility": 0.02, "temperature": 0.0}
    ar = engine.generate_codes(*args, images_per_prompt=2, decoding="ar", **guidance)
    assert torch.equal(engine.generate_codes(*args, images_per_prompt=2, decoding=decoding, **guidance), ar)
    constant = engine.generate_codes(*args, images_per_prompt=2, cfg_scale=6.0, temperature=0.0, decoding="ar")
    assert not torch.equal(ar, constant)  # the schedule changes the codes: the comparison can fail


class MarkovToy:
    """A toy autoregressive model over 3 codes: p(x_i | x_<i) = softmax(table[i, x_(i-1)]),
    a different sharp distribution for every position and previous code, so drafts drawn
    from another position's distribution are often rejected. `feed` is what the engine's
    feed computes: the distribution of the code after each fed one."""

    codes, length = 3, 4

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(3)
        self.first = (2.0 * torch.randn(self.codes, generator=generator)).softmax(-1)
        self.table = (2.0 * torch.randn(self.length, self.codes, self.codes, generator=generator)).softmax(-1)

    def feed(self, fed: torch.Tensor, order: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        following = (order + 1).clamp_max(self.length - 1)
        return self.table[following[None, :], fed]  # (n, Q, V)

    def exact(self) -> dict[tuple[int, ...], float]:
        result = {}
        for sequence in itertools.product(range(self.codes), repeat=self.length):
            mass = float(self.first[sequence[0]])
            for index in range(1, self.length):
                mass *= float(self.table[index, sequence[index - 1], sequence[index]])
            result[sequence] = mass
        return result


def _chi_square(toy: MarkovToy, samples: int, images: int, seed: int = 0) -> tuple[float, float, float]:
    """Pearson's chi-square of SJD's samples against the exact distribution (sequences
    expected fewer than 5 times pooled into one cell), its 0.999 quantile, and the mean passes."""
    exact = toy.exact()
    counts = dict.fromkeys(exact, 0)
    passes = 0
    generator = torch.Generator().manual_seed(seed)
    for _ in range(samples // images):
        codes = torch.empty((images, toy.length), dtype=torch.long)
        first = toy.first.expand(images, -1)
        codes[:, 0] = draw_tokens(first, generator)
        filled = [0]

        def rewind(length: int) -> None:
            filled[0] = length

        def feed(fed, order, kept):
            filled[0] += fed.shape[1]
            return toy.feed(fed, order, kept)

        passes += sjd_codes(codes, first, feed, lambda s: draw_tokens(s, generator), False, generator, 3, lambda: filled[0], rewind)
        for row in codes.tolist():
            counts[tuple(row)] += 1
    total = sum(counts.values())
    rare = [s for s, p in exact.items() if total * p < 5]
    observed = [counts[s] for s in exact if s not in rare] + [sum(counts[s] for s in rare)]
    expected = [total * p for s, p in exact.items() if s not in rare] + [total * sum(exact[s] for s in rare)]
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return statistic, scipy.stats.chi2.ppf(0.999, len(observed) - 1), passes / (samples // images)


@pytest.mark.slow
@pytest.mark.parametrize("images", [1, 2, 4])
def test_sjd_samples_are_distributed_as_autoregressive_sampling(images, monkeypatch):
    """Pearson's chi-square of 4,000 SJD samples of 4 codes (81 sequences) against the
    exact autoregressive distribution stays below its 0.999 quantile, with 1 image per
    call and with 2 and 4 (all accept as many drafts as the one that accepts fewest).
    The same sampler accepting every draft is far above it: the test can fail."""
    toy = MarkovToy()
    statistic, quantile, passes = _chi_square(toy, 4000, images)
    assert statistic < quantile
    assert 2.0 < passes < toy.length  # drafts were accepted and rejected
    verify = parallel_decoding._verify
    monkeypatch.setattr(
        parallel_decoding, "_verify", lambda scores, *rest: (torch.full(scores.shape[:1], rest[2]), verify(scores, *rest)[1])
    )
    statistic, quantile, _ = _chi_square(toy, 4000, images)
    assert statistic > 10 * quantile


def test_the_cache_after_a_rejection_is_the_cache_of_the_codes_kept(assembled, monkeypatch):  # noqa: F811
    """Every time SJD rewinds past rejected drafts, the cached keys and values equal
    those of a workspace that fed the prompt and the codes kept one by one, and no
    slot past them is visible or counted."""
    built, _, collator = assembled
    model = built.model.eval()
    engine = DecodeEngine(model)
    snapshots = []
    original = DecodeWorkspace.rewind

    def recording(workspace, length):
        rejected = workspace.length > length
        original(workspace, length)
        if rejected:
            layers = [(layer.keys[:, :, :length].clone(), layer.values[:, :, :length].clone()) for layer in workspace.cache.layers]
            snapshots.append(
                (length, layers, workspace.visible.clone(), [int(layer.cumulative_length) for layer in workspace.cache.layers])
            )

    monkeypatch.setattr(DecodeWorkspace, "rewind", recording)
    prompts = _prompts()[:1]
    codes = engine.generate_codes(collator, prompts, "toy_codes", GRID, 2, 3.0, temperature=1.0, top_k=8, seed=5, decoding="sjd:4")
    assert snapshots  # drafts were rejected
    monkeypatch.setattr(DecodeWorkspace, "rewind", original)
    batch = image_prompt_batch(model, collator, prompts, GRID, 2, Guidance(3.0), (1.0, 8, None))[1]
    prompt_length = batch.input_ids.shape[1]
    for length, layers, visible, counted in snapshots:
        fresh = DecodeWorkspace(model, 4, 64, torch.device("cpu"))
        embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
        with torch.no_grad():
            fresh.prefill(model, embeds, batch.attention_mask, batch.position_ids)
            for index in range(length - prompt_length):
                fresh.reserve_step()
                fresh.advance(model, model.embed_codes("toy_codes", codes[:, index].repeat(2)))
        for (keys, values), layer in zip(layers, fresh.cache.layers, strict=True):
            torch.testing.assert_close(keys, layer.keys[:, :, :length], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(values, layer.values[:, :, :length], rtol=1e-5, atol=1e-6)
        assert torch.equal(visible[..., :length], fresh.visible[..., :length]) and not visible[..., length:].any()
        assert counted == [length] * len(layers)


def test_zipar_schedule_draws_every_code_once_after_its_context():
    """4 x 6 grid, window 2: (4 - 1) * 2 + 6 = 12 passes; code (r, j) is drawn at pass
    2r + j, from the code before it in raster order (or, at a row start whose code
    before is not drawn yet, a stand-in nobody else sees), and each drawn code is fed
    exactly once."""
    schedule = zipar_schedule(4, 6, 2)
    assert 1 + len(schedule) == 12
    drawn_at = {0: 0}
    fed_real = []
    for step, (fed, places, kept, drawn) in enumerate(schedule, start=1):
        for code, place, keep, target in zip(fed, places, kept, drawn, strict=True):
            assert code in drawn_at and drawn_at[code] < step  # only codes drawn before are fed
            if keep:
                assert place == code
                fed_real.append(code)
            else:  # a stand-in: the newest code of the row above, at the place before the row's start
                assert place == target - 1 and target % 6 == 0 and code // 6 == target // 6 - 1
            if target >= 0:
                assert target not in drawn_at and target == place + 1
                drawn_at[target] = step
    assert drawn_at == {r * 6 + j: 2 * r + j for r in range(4) for j in range(6)}
    assert sorted(fed_real) == list(range(23))  # every code but the last, once
    assert len(zipar_schedule(4, 6, 6)) + 1 == 24  # window = row: the autoregressive order
    with pytest.raises(ModelInputError, match="between 1 and the row length 6"):
        zipar_schedule(4, 6, 7)


@pytest.mark.parametrize("window", [1, 2])
def test_zipar_first_row_is_autoregressive_and_passes_follow_the_schedule(varied, window):
    """The first row sees only itself and the prompt, so greedy ZipAR draws the
    autoregressive codes there; later rows differ (they miss the end of the row above)."""
    model, collator = varied
    engine = DecodeEngine(model)
    args = (collator, _prompts(), "toy_codes", GRID)
    ar = engine.generate_codes(*args, images_per_prompt=2, cfg_scale=3.0, temperature=0.0)
    zipar = engine.generate_codes(*args, images_per_prompt=2, cfg_scale=3.0, temperature=0.0, decoding=f"zipar:{window}")
    assert engine.passes == 3 * window + 4
    assert torch.equal(zipar[:, :4], ar[:, :4])
    assert not torch.equal(zipar, ar)


def test_sampled_parallel_decoding_is_seeded_and_respects_top_k(assembled):  # noqa: F811
    built, _, collator = assembled
    model = built.model.eval()
    engine = DecodeEngine(model)
    args = (collator, _prompts(), "toy_codes", GRID, 2, 3.0)
    for decoding in ("sjd", "zipar"):
        first = engine.generate_codes(*args, temperature=1.0, top_k=1, seed=3, decoding=decoding)
        assert torch.equal(first, engine.generate_codes(*args, temperature=0.0, decoding=decoding))  # top-1 is greedy
        sampled = engine.generate_codes(*args, temperature=1.0, top_p=0.9, seed=3, decoding=decoding)
        assert torch.equal(sampled, engine.generate_codes(*args, temperature=1.0, top_p=0.9, seed=3, decoding=decoding))
        assert not torch.equal(sampled, engine.generate_codes(*args, temperature=1.0, top_p=0.9, seed=4, decoding=decoding))


@pytest.mark.slow
def test_compiled_parallel_decoding_draws_the_eager_codes(assembled):  # noqa: F811
    """SJD through the compiled multi-position step (ZipAR calls the same step) draws
    the eager engine's codes; the window shrinks at the end, so the step runs with
    several numbers of fed codes."""
    built, _, collator = assembled
    model = built.model.eval()
    eager, compiled = DecodeEngine(model), DecodeEngine(model, compile_mode="default")
    args = (collator, _prompts(), "toy_codes", GRID, 1, 3.0)
    expected = eager.generate_codes(*args, temperature=1.0, seed=2, decoding="sjd:4")
    assert torch.equal(compiled.generate_codes(*args, temperature=1.0, seed=2, decoding="sjd:4"), expected)
    assert compiled.passes == eager.passes < GRID


def test_decoding_choices_are_checked():
    assert DecodingMethod.parse("sjd:8") == DecodingMethod("sjd", 8) and DecodingMethod.parse("zipar") == DecodingMethod("zipar", None)
    assert str(DecodingMethod.parse("zipar:3")) == "zipar:3"
    for bad in ("beam", "sjd:0", "sjd:x", "ar:3", "sjd:"):
        with pytest.raises(ModelInputError, match="decoding"):
            DecodingMethod.parse(bad)
