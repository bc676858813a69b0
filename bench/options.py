"""Old import path of `bench.core.options`, kept so that user method files and the pickled jobs of
runs in flight (submitit) still load; new code imports `bench.core.options`."""

from bench.core.options import *  # noqa: F403
