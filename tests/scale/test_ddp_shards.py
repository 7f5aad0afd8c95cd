"""Real DDP on CPU (2 gloo processes, each with 2 data-loader workers) reading WebDataset
shards: the 4 readers read disjoint shards, and one epoch reads every sample once."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import REPO, tiny_text_recipe, write_recipe
from shard_files import text_shards
from streaming.test_resume import ENV, WORKER

from modal_core.checkpoints import store
from modal_core.data.text_tokenizer import load_tokenizer

SHARDS, PER_SHARD, BATCH = 8, 4, 4
STEPS = SHARDS * PER_SHARD // (2 * BATCH)  # one epoch over both ranks


def test_two_ddp_ranks_with_two_workers_each_read_disjoint_shards(tmp_path):
    text_shards(tmp_path / "shards", shards=SHARDS, per_shard=PER_SHARD)
    source = {"dataset": "webdataset_text", "options": {"path": str(tmp_path / "shards" / "shard-{00000..00007}.tar")}}
    recipe = tiny_text_recipe(
        tmp_path / "run",
        data={"sources": [source], "batch_size": BATCH, "max_length": 48, "num_workers": 2},
        trainer={"max_steps": STEPS, "log_every_n_steps": 1, "devices": 2, "strategy": "ddp"},
    )
    path = write_recipe(tmp_path / "ddp.yaml", recipe)
    out = tmp_path / "read.jsonl"
    done = subprocess.run(
        [sys.executable, str(WORKER), str(path), str(out)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    tokenizer = load_tokenizer(store.resolve_checkpoint(tmp_path / "run"))
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    keys = {
        rank: [re.search(r"sample (s\d+k\d+)", tokenizer.decode(row)).group(1) for e in entries if e["rank"] == rank for row in e["rows"]]
        for rank in (0, 1)
    }
    assert len(keys[0]) == len(keys[1]) == STEPS * BATCH
    assert sorted(keys[0] + keys[1]) == sorted(f"s{s}k{i}" for s in range(SHARDS) for i in range(PER_SHARD))
    shards = {rank: {key.split("k")[0] for key in keys[rank]} for rank in (0, 1)}
    assert len(shards[0]) == len(shards[1]) == SHARDS // 2 and not shards[0] & shards[1]
