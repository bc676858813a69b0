"""Launching: local, process-pool and SLURM (submitit) launchers, the resumable run job, the
checks before any run folder is written, run states, locks and SLURM queries."""
