"""Runtime settings of a run: devices, data-parallel processes, autocast, torch.compile,
AdamW groups, FLOP counting, stop signals and progress bars."""
