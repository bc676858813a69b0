"""Old import path of `bench.core.config`, kept so that user method files and the pickled jobs of
runs in flight (submitit) still load; new code imports `bench.core.config`."""

from bench.core.config import *  # noqa: F403
