"""Planning: a sweep file or `--methods` expanded into validated, canonical run configs, and
the torch-free method cards planning checks options against."""
