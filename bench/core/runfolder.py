"""Whether a run folder's config.json is the run its folder says it is. The run id is a hash of
the resolved configuration (bench.core.config), so a config.json edited by hand, or copied
from another run, no longer hashes to it: such a folder's numbers were trained with settings
other than the ones it states. `bench status` names it, reports leave it out (never pooled)
and launching refuses to resume it. A config.json that cannot be read at all is `broken`: a
finished run's is rewritten by the next launch (bench.launch.jobs). Imports no torch."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.config import RunConfig
from bench.core.errors import BenchError
from bench.core.files import CONFIG

RUN_ID = re.compile(r"[0-9a-f]{12}")  # what RunConfig.run_id looks like: a folder named so
MISMATCHED = "does not state the settings this run trained with"  # in every mismatch reason


@dataclass(frozen=True)
class ConfigCheck:
    """`state`: ok, missing (no config.json), broken (unreadable) or mismatched (it does not
    hash to the run id its folder or its own `run_id` names); `reason` says which, in words."""

    state: str
    reason: str = ""


def expected_ids(folder_name: str, config: dict[str, Any]) -> set[str]:
    """The run ids a config.json must hash to: its folder's name and the `run_id` it records,
    where they are run ids (12 hex digits; not in folders a person named and wrote, as tests
    do)."""
    recorded = config.get("run_id")
    return {i for i in (folder_name, recorded) if isinstance(i, str) and RUN_ID.fullmatch(i)}


def mismatch(folder_name: str, config: dict[str, Any]) -> str | None:
    """Why `config` (a run folder's config.json) is not the run its folder names, or None."""
    expected = expected_ids(folder_name, config)
    if not expected:
        return None
    try:
        actual = RunConfig.from_dict(config).run_id
    except (BenchError, TypeError, ValueError) as err:
        return f"{CONFIG} holds settings no run can have ({err}): it {MISMATCHED}"
    if expected == {actual}:
        return None
    return (f"{CONFIG} hashes to {actual}, not to its run id {sorted(expected - {actual})[0]}: "
            f"it was edited or copied, so it {MISMATCHED}")


def check_config(run_dir: Path) -> ConfigCheck:
    """Read `run_dir/config.json` and check it against the run id (see `mismatch`)."""
    path = Path(run_dir) / CONFIG
    try:
        config = json.loads(path.read_bytes())
    except FileNotFoundError:
        return ConfigCheck("missing", f"no {CONFIG}")
    except (OSError, ValueError) as err:  # truncated or garbage JSON, undecodable bytes
        return ConfigCheck("broken", f"{CONFIG} is unreadable ({err})")
    if not isinstance(config, dict):
        return ConfigCheck("broken", f"{CONFIG} is not a JSON object")
    reason = mismatch(Path(run_dir).name, config)
    return ConfigCheck("ok") if reason is None else ConfigCheck("mismatched", reason)
