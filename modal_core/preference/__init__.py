"""Preference and reward tuning of output modalities: GRPO and DPO in the one training loop."""
