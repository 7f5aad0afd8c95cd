"""Scale: Lightning strategies from the recipe, activation checkpointing, throughput
and MFU logging, the memory planner, and sharded-checkpoint export."""
