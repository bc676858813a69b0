"""The run folder's file names, in one place (ARCHITECTURE.md lists them):

    OUT/<run_id>/
      config.json         resolved config + git sha + package versions + data fingerprint
      metrics.jsonl       one JSON object per epoch (and --eval-every evaluation)
      steps.jsonl         the mean loss of every `log_every` steps
      checkpoint.pt       the newest checkpoint; checkpoint.prev.pt the one before
      summary.json        written last: status, metrics, compute, setup, data
      reconstructions.pt  test images, the visible mask and the reconstruction (images)
      outcomes.npz        each probe's per-example scores on the test split (bench.core.outcomes)
      lock, job.json, attempts.jsonl   who trains the run, how it was launched, each start
      config.broken-N.json  an unreadable config.json of a finished run, kept when rewritten
      encoder-<format>.safetensors     `bench export`'s default output (bench.core.exports)
    OUT/tuning.json       bench tune: every trial's score and each row's chosen recipe
    OUT/tune/<run_id>/    bench tune's trials (run folders as above)
"""

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STEPS = "steps.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
SUMMARY = "summary.json"
RECONSTRUCTIONS = "reconstructions.pt"
OUTCOMES = "outcomes.npz"
LOCK = "lock"
JOB = "job.json"
ATTEMPTS = "attempts.jsonl"
BROKEN_CONFIG = "config.broken-{n}.json"
TUNING = "tuning.json"
TRIALS_DIR = "tune"
