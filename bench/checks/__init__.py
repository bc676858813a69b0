"""Measurements of the code itself: the step benchmark (`bench perf`) and the GPU check."""
