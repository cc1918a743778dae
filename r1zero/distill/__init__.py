"""The rest of the DeepSeek-R1 recipe: rejection sampling (`r1zero-sample`) and supervised fine-tuning
(`r1zero-sft`), for cold starts, rejection-sampling fine-tuning and distillation into small students."""
