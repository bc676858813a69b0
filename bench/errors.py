"""Old import path of `bench.core.errors`, kept so that user method files and the pickled jobs of
runs in flight (submitit) still load; new code imports `bench.core.errors`."""

from bench.core.errors import *  # noqa: F403
