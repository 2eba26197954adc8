"""``lraee run``: the whole co-design pipeline as resumable stages (see :mod:`analysis.pipeline.runner`)."""
