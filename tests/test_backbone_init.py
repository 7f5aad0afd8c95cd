"""`backbone.embedding_init_std`: the token embeddings of a new backbone drawn at a chosen scale."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_BACKBONE
from omegaconf import OmegaConf

from modal_core.assemble import backbone_arguments
from modal_core.config.schema import Recipe
from modal_core.model.backbone import build_backbone

VOCAB = 300


def built(std: float | None, **config) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(None, "llama", {**TINY_BACKBONE["config"], **config}, vocab_size=VOCAB, embedding_init_std=std)


def test_embeddings_are_redrawn_at_the_given_scale_and_every_other_weight_is_unchanged():
    default, scaled = built(None), built(1.0)
    assert default.get_input_embeddings().weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert scaled.get_input_embeddings().weight.std().item() == pytest.approx(1.0, rel=0.05)
    reference = {name: weight for name, weight in default.state_dict().items() if name != "model.embed_tokens.weight"}
    others = {name: weight for name, weight in scaled.state_dict().items() if name != "model.embed_tokens.weight"}
    assert others.keys() == reference.keys()
    for name, weight in others.items():
        torch.testing.assert_close(weight, reference[name], rtol=0, atol=0, msg=name)


def test_the_padding_row_stays_zero():
    embeddings = built(1.0, pad_token_id=3).get_input_embeddings()
    assert embeddings.padding_idx == 3
    assert embeddings.weight[3].abs().sum().item() == 0
    assert embeddings.weight[4].abs().sum().item() > 0


def test_the_recipe_key_reaches_the_builder():
    recipe = OmegaConf.merge(OmegaConf.structured(Recipe), {"backbone": {**TINY_BACKBONE, "embedding_init_std": 0.5}})
    torch.manual_seed(0)
    model = build_backbone(**backbone_arguments(recipe), vocab_size=VOCAB)
    assert model.get_input_embeddings().weight.std().item() == pytest.approx(0.5, rel=0.05)
