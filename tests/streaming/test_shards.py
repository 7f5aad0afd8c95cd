"""Streaming WebDataset shards: listing, reading, disjoint readers, resumption, bad shards."""

from __future__ import annotations

import io
import json
import random

import fsspec
import numpy as np
import pytest
from shard_files import text_shards, write_shards
from torch.utils.data import DataLoader

from modal_core.builtins import webdataset_text
from modal_core.data.bad_samples import BadSamplePolicy, read_bad_samples
from modal_core.data.indexed import TextDataset
from modal_core.data.shards import ShardRecord, list_shards, read_shard
from modal_core.data.streaming import ReaderStream, StreamingMixture, batches_delivered
from modal_core.errors import DataError, RecipeError


def _key(sample) -> str:
    return sample.source.rsplit(":", 1)[1]


def _mix(source, seed: int = 0, **kwargs) -> StreamingMixture:
    return StreamingMixture([("webdataset_text", source, 1.0)], seed=seed, **kwargs)


def _batches(mixture: StreamingMixture, count: int, *, workers: int, batch_size: int, done: int = 0, rank: int = 0, world: int = 1):
    stream = ReaderStream(mixture, rank, world, workers, batch_size, batches_done=done)
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=lambda samples: [_key(s) for s in samples])
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            return batches
    raise AssertionError("the stream ended")


def test_brace_patterns_lists_and_urls_name_the_shards_in_order(tmp_path):
    paths = text_shards(tmp_path, shards=3, per_shard=2)
    assert list_shards(str(tmp_path / "shard-{00000..00002}.tar"), "x") == [str(p) for p in paths]
    assert list_shards([str(paths[2]), str(tmp_path / "shard-{00000..00001}.tar")], "x") == [str(p) for p in (paths[2], *paths[:2])]
    url = f"file://{paths[1]}"
    assert [r.key for r in read_shard(url)] == ["s1k0", "s1k1"]
    with pytest.raises(DataError, match=r"x: shard not found: .*shard-00003\.tar"):
        list_shards(str(tmp_path / "shard-{00002..00004}.tar"), "x")


def test_members_are_decoded_by_extension(tmp_path):
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    buffer = io.BytesIO()
    np.save(buffer, array)
    sample = {"__key__": "a", "txt": "héllo", "json": json.dumps({"n": 3}), "npy": buffer.getvalue(), "bin": b"\x00\x01"}
    (path,) = write_shards(tmp_path, [[sample, {"__key__": "b", "txt": b"\xff\xfe", "json": b"{nope", "npy": b"junk"}]])
    good, bad = read_shard(str(path))
    assert (good.value("txt"), good.value("json"), good.value("bin")) == ("héllo", {"n": 3}, b"\x00\x01")
    np.testing.assert_array_equal(good.value("npy"), array)
    assert good.value("npy").dtype == np.int16
    where = f"{path}:b"
    with pytest.raises(DataError, match=f"{where}.txt: not UTF-8"):
        bad.value("txt")
    with pytest.raises(DataError, match=f"{where}.json: not valid JSON"):
        bad.value("json")
    with pytest.raises(DataError, match=f"{where}.npy: not a numpy"):
        bad.value("npy")
    with pytest.raises(DataError, match=rf"{where}: no \.jpg member; the sample has \['json', 'npy', 'txt'\]"):
        bad.value("jpg")


def test_two_workers_read_disjoint_shards_and_an_epoch_reads_every_sample_once(tmp_path):
    text_shards(tmp_path, shards=4, per_shard=5)
    source = webdataset_text({"path": str(tmp_path / "shard-{00000..00003}.tar")}, 0, "train")
    batches = _batches(_mix(source), 4, workers=2, batch_size=5)
    keys = [key for batch in batches for key in batch]
    assert sorted(keys) == sorted(f"s{s}k{i}" for s in range(4) for i in range(5))
    # Batch b came from worker b % 2, and each worker's shards are its own.
    shards_of = [{key.split("k")[0] for batch in batches[worker::2] for key in batch} for worker in (0, 1)]
    assert len(shards_of[0]) == len(shards_of[1]) == 2 and not shards_of[0] & shards_of[1]
    # The reader's shards are those the epoch's shuffle gives it.
    order = [f"s{s}" for s in range(4)]
    random.Random("0:0").shuffle(order)
    assert shards_of == [set(order[0::2]), set(order[1::2])]


def test_two_ranks_of_two_workers_read_disjoint_shards(tmp_path):
    text_shards(tmp_path, shards=8, per_shard=3)
    source = webdataset_text({"path": str(tmp_path / "shard-{00000..00007}.tar")}, 0, "train")
    per_rank = [{k for b in _batches(_mix(source), 4, workers=2, batch_size=3, rank=r, world=2) for k in b} for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 12
    assert not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == {f"s{s}k{i}" for s in range(8) for i in range(3)}


def test_a_resumed_stream_continues_where_it_stopped_across_epochs(tmp_path):
    text_shards(tmp_path, shards=4, per_shard=3)
    source = webdataset_text({"path": str(tmp_path / "shard-{00000..00003}.tar")}, 0, "train")
    uninterrupted = _batches(_mix(source), 10, workers=2, batch_size=2)
    first = _batches(_mix(source), 5, workers=2, batch_size=2)
    resumed = _batches(_mix(source), 5, workers=2, batch_size=2, done=5)
    assert first + resumed == uninterrupted
    # One epoch is 12 samples (6 per worker); the next epoch reads every sample again, reshuffled.
    keys = [key for batch in uninterrupted for key in batch]
    per_worker = [[key for batch in uninterrupted[w::2] for key in batch] for w in (0, 1)]
    assert all(len(set(stream[:6])) == 6 for stream in per_worker)
    assert sorted(per_worker[0][:6] + per_worker[1][:6]) == sorted({*keys})
    assert per_worker[0][:6] != per_worker[0][6:]  # another shard order in epoch 1


def test_batches_delivered_follows_the_loaders_round_robin():
    assert [batches_delivered(5, worker, 2) for worker in (0, 1)] == [3, 2]
    assert [batches_delivered(1, worker, 3) for worker in (0, 1, 2)] == [1, 0, 0]
    assert batches_delivered(7, 0, 1) == 7


def test_map_style_and_streaming_sources_mix_by_weight_deterministically(tmp_path):
    paths = [str(p) for p in text_shards(tmp_path, shards=2, per_shard=50)]
    shards = webdataset_text({"path": paths}, 0, "train")
    texts = TextDataset([f"text {i}" for i in range(10)], source="texts")
    mixture = StreamingMixture([("texts", texts, 1.0), ("webdataset_text", shards, 3.0)], seed=5)
    sources = [s.source for _, s in zip(range(120), mixture.stream(0, 1))]

    # The same stream by hand: position p draws from Random("5:0/1:p"); shards in epoch 0's order.
    order = list(paths)
    random.Random("5:0").shuffle(order)
    records = iter([f"{shard}:{record.key}" for shard in order for record in read_shard(shard)])
    expected = []
    for position in range(120):
        rng = random.Random(f"5:0/1:{position}")
        source = rng.choices([0, 1], weights=[1.0, 3.0])[0]
        expected.append(f"texts[{rng.randrange(10)}]" if source == 0 else next(records))
    assert sources == expected
    assert 0 < sum(".tar:" not in s for s in sources) < 60  # both sources are drawn


def test_fewer_shards_than_readers_is_refused(tmp_path):
    text_shards(tmp_path, shards=3, per_shard=2)
    source = webdataset_text({"path": str(tmp_path / "shard-{00000..00002}.tar")}, 0, "train")
    with pytest.raises(RecipeError, match=r"3 shard\(s\) for 4 readers"):
        next(_mix(source).stream(0, 4))


def _damaged(tmp_path):
    """Shards: good, not a tar, truncated in its second sample, good."""
    good = text_shards(tmp_path, shards=2, per_shard=3)
    not_tar = tmp_path / "shard-00002.tar"
    not_tar.write_bytes(b"this is not a tar archive\n" * 40)
    (truncated,) = write_shards(tmp_path / "t", [[{"__key__": f"t{i}", "txt": f"sample t{i}"} for i in range(3)]])
    cut = tmp_path / "shard-00003.tar"
    cut.write_bytes(truncated.read_bytes()[:2600])
    return [str(p) for p in (good[0], not_tar, cut, good[1])]


def test_a_file_that_is_not_a_tar_or_is_truncated_raises_naming_the_shard_and_member(tmp_path):
    shards = _damaged(tmp_path)
    assert isinstance(list(read_shard(shards[0]))[0], ShardRecord)
    (not_tar,) = read_shard(shards[1])
    assert str(not_tar.error).startswith(f"{shards[1]}: not a tar file")
    records = list(read_shard(shards[2]))
    assert len(records) == 1  # t0 is held back (its members might be cut off) and skipped with the rest
    assert f"{shards[2]}: truncated or corrupt at member 't0.txt'" in str(records[-1].error)
    mixture = StreamingMixture([("webdataset_text", webdataset_text({"path": shards}, 0, "train"), 1.0)], seed=0)
    with pytest.raises(DataError, match="not a tar file|truncated or corrupt at member"):
        list(zip(range(10), mixture.stream(0, 1)))


def test_under_skip_bad_shards_are_logged_and_every_good_sample_is_read(tmp_path):
    shards = _damaged(tmp_path)
    log = tmp_path / "bad_samples.jsonl"
    source = webdataset_text({"path": shards}, 0, "train")
    mixture = _mix(source, bad_samples=BadSamplePolicy("skip", log))
    keys = [_key(s) for _, s in zip(range(6), mixture.stream(0, 1))]
    assert sorted(keys) == ["s0k0", "s0k1", "s0k2", "s1k0", "s1k1", "s1k2"]
    logged = {entry["source"]: entry["reason"] for entry in read_bad_samples(log)}
    assert set(logged) == {shards[1], f"{shards[2]}:t0.txt"}
    assert logged[shards[1]].startswith(f"{shards[1]}: not a tar file")


def test_fsspec_urls_are_read_through_fsspec(tmp_path):
    paths = text_shards(tmp_path, shards=2, per_shard=3)
    memory = fsspec.filesystem("memory")
    for path in paths:
        memory.pipe(f"/remote/{path.name}", path.read_bytes())
    try:
        source = webdataset_text({"path": "memory://remote/shard-{00000..00001}.tar"}, 0, "train")
        assert source.shards == ["memory://remote/shard-00000.tar", "memory://remote/shard-00001.tar"]
        keys = sorted(_key(s) for _, s in zip(range(6), _mix(source).stream(0, 1)))
        assert keys == sorted(f"s{s}k{i}" for s in range(2) for i in range(3))
        (missing,) = read_shard("memory://remote/shard-00009.tar")
        assert str(missing.error).startswith("memory://remote/shard-00009.tar: could not read the shard")
    finally:
        memory.rm("/remote", recursive=True)
