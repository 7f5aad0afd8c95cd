"""The built-in image rewards against direct computations: the shapes checker's checks,
the understanding self-reward's P(yes) from the model's own next-token losses, and the
CLIP score of a tiny random CLIP saved to a temporary folder."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_BACKBONE
from omegaconf import OmegaConf
from test_image_plugins import TINY_IMAGES
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from modal_core.assemble import assemble, special_tokens_of
from modal_core.config.schema import Recipe
from modal_core.data.chat import question_answer
from modal_core.data.collator import Collator
from modal_core.data.segments import Media
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core.errors import RecipeError
from modal_core.preference.rewards import RewardContext
from modal_core_images.evaluation.shapes_checker import check_caption
from modal_core_images.rewards import clip_score, shapes_checker, understanding_self_reward
from modal_core_images.shapes import caption, render_scene, scene_for_index

PROMPTS = ["a red circle left of a blue square", "a green cross"]


def _images():
    return [render_scene(scene_for_index(index, 0, "train", image_size=32, num_objects=2)) for index in range(2)]


@pytest.fixture
def context(image_plugins) -> RewardContext:
    recipe = OmegaConf.merge(OmegaConf.structured(Recipe), {"output_dir": "unused", "backbone": TINY_BACKBONE, "modalities": TINY_IMAGES})
    tokenizer = train_tokenizer(
        ["is there a red circle? yes", "is there a green cross? no"] * 20, 300, special_tokens_of(recipe, image_plugins)
    )
    torch.manual_seed(0)
    built = assemble(recipe, image_plugins, tokenizer)
    return RewardContext(built.model.eval(), Collator(tokenizer, built.modalities, max_length=96), tokenizer, torch.device("cpu"))


def test_the_shapes_checker_scores_the_share_of_checks_passed(context):
    images = _images()
    reward = shapes_checker({}, context)
    expected = [sum(check_caption(image, prompt).values()) / 5 for prompt, image in zip(PROMPTS, images)]
    assert reward(PROMPTS, images, [{}, {}]) == expected
    only = shapes_checker({"check": "count_ok"}, context)(PROMPTS, images, [{}, {}])
    assert only == [float(check_caption(image, prompt)["count_ok"]) for prompt, image in zip(PROMPTS, images)]
    with pytest.raises(RecipeError, match="check must be one of"):
        shapes_checker({"check": "colour"}, context)


def test_a_rendered_scene_scores_one_for_its_own_caption(context):
    scene = scene_for_index(3, 0, "train", image_size=32, num_objects=2)
    assert shapes_checker({}, context)([caption(scene)], [render_scene(scene)], [{}]) == [1.0]


def _answer_log_likelihood(context: RewardContext, question: str, answer: str, image) -> float:
    """Minus the model's summed next-token loss on the answer: one sample through `forward`."""
    batch = context.collator([question_answer(question, answer, [Media("image_understanding", image)])])
    with torch.no_grad():
        return -float(context.model(**batch.model_inputs()).head_loss_sums["text"])


def test_the_self_reward_is_the_models_own_p_yes_averaged_over_the_prompts_objects(context):
    images = _images()
    scores = understanding_self_reward({}, context)(PROMPTS, images, [{}, {}])
    expected = []
    for prompt, image in zip(PROMPTS, images):
        objects = prompt.split(" left of ")
        p_yes = []
        for phrase in objects:
            question = f"is there {phrase}?"
            margin = _answer_log_likelihood(context, question, "yes", image) - _answer_log_likelihood(context, question, "no", image)
            p_yes.append(1 / (1 + math.exp(-margin)))
        expected.append(sum(p_yes) / len(p_yes))
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)


def test_the_self_reward_rejects_a_question_without_the_object(context):
    with pytest.raises(RecipeError, match="must contain"):
        understanding_self_reward({"question": "is it red?"}, context)


def test_the_clip_score_is_the_cosine_of_the_two_embeddings(context, tmp_path):
    tokenizer = train_tokenizer(PROMPTS * 10, 300, [])
    text = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 300}
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    config = CLIPConfig(text_config={**text, "eos_token_id": tokenizer.eos_token_id}, vision_config=vision, projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(tmp_path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(tmp_path)
    images = _images()
    scores = clip_score({"path": str(tmp_path)}, context)(PROMPTS, images, [{}, {}])
    model = CLIPModel.from_pretrained(tmp_path).eval()
    expected = []
    with torch.no_grad():
        for prompt, image in zip(PROMPTS, images):
            inputs = processor(text=[prompt], images=[image], return_tensors="pt", padding=True)
            image_features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]
            text_features = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).pooler_output[0]
            expected.append(float(torch.nn.functional.cosine_similarity(image_features, text_features, dim=0)))
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)
    with pytest.raises(RecipeError, match="needs options.path"):
        clip_score({}, context)


def test_the_self_reward_asks_the_frozen_reference_by_default(context):
    import copy
    from contextlib import nullcontext
    from dataclasses import replace

    frozen = copy.deepcopy(context.model)
    with torch.no_grad():
        for parameter in context.model.backbone.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))  # the policy has moved away from it
    with_reference = replace(context, reference=lambda: nullcontext(frozen))
    images = _images()
    by_reference = understanding_self_reward({}, with_reference)(PROMPTS, images, [{}, {}])
    by_policy = understanding_self_reward({"judge": "policy"}, with_reference)(PROMPTS, images, [{}, {}])
    asked_frozen = understanding_self_reward({}, replace(context, model=frozen))(PROMPTS, images, [{}, {}])
    torch.testing.assert_close(by_reference, asked_frozen)
    assert not torch.allclose(by_reference, by_policy)
