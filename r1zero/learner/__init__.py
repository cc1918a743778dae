"""The learner: a DeepSpeed (or plain torch) engine that computes response logprobs and takes GRPO steps."""
