"""Old import path of `bench.ops.masking`, kept so that user method files and the pickled jobs of
runs in flight (submitit) still load; new code imports `bench.ops.masking`."""

from bench.ops.masking import *  # noqa: F403
