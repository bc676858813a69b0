"""One run: sampling, the training step, the loop (with hooks), checkpoints, the run folder's
records and trackers. `bench.run.train.train_run` is the entry."""
