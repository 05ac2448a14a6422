"""``python -m batchglm.demo_seed``: the seed tutorial through ``batchglm.api``."""
