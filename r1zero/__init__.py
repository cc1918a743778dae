"""r1zero: DeepSeek R1-Zero replication by pure reinforcement learning (GRPO) from a base model."""

__version__ = "0.1.0"
