"""Evaluation of a frozen encoder: the protocols a run selects (kNN and linear probes,
tran1, fine-tuning), held-out pretext metrics and fill diagnostics."""
