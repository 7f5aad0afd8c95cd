"""A reward for preference tuning: `preference.rewards: [{name: brightness}]` in a GRPO recipe."""

from modal_core import hookimpl


def brightness(options: dict, context):
    """Scores each image by its mean grey level in [0, 1] (`options` and `context` unused)."""

    def reward(prompts, images, metadata):
        return [sum(image.convert("L").get_flattened_data()) / (255 * image.width * image.height) for image in images]

    return reward


@hookimpl
def modal_core_rewards():
    return {"brightness": brightness}
