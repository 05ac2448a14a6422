"""``python -m batchglm.demo``: the seed tutorial's example 1 end to end (see ``__main__``)."""
