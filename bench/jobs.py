"""Old import path of `bench.launch.jobs`, kept so that user method files and the pickled jobs of
runs in flight (submitit) still load; new code imports `bench.launch.jobs`."""

from bench.launch.jobs import *  # noqa: F403
