"""A run folder's config.json against its run id (bench.core.runfolder): what `bench status`,
reports and launching rely on to tell an edited or unreadable config from a good one."""

from __future__ import annotations

import json

from bench.core.config import RunConfig
from bench.core.runfolder import check_config


def write(folder, config) -> None:
    folder.mkdir(parents=True)
    text = config if isinstance(config, str) else json.dumps(config)
    (folder / "config.json").write_text(text)


def test_a_config_is_checked_against_its_folder_and_its_own_run_id(tmp_path):
    cfg = RunConfig(method="mae", options={"mask_ratio": 0.6}, dataset="digits")
    good = {**cfg.to_dict(), "run_id": cfg.run_id, "git_sha": "abc"}  # extra keys: ignored
    write(tmp_path / cfg.run_id, good)
    assert check_config(tmp_path / cfg.run_id).state == "ok"
    write(tmp_path / "renamed-by-hand", good)  # a folder a person named: its own run_id counts
    assert check_config(tmp_path / "renamed-by-hand").state == "ok"
    edited = {**good, "options": {"mask_ratio": 0.9}}
    write(tmp_path / "a" / cfg.run_id, edited)
    check = check_config(tmp_path / "a" / cfg.run_id)
    assert check.state == "mismatched" and f"not to its run id {cfg.run_id}" in check.reason
    write(tmp_path / "b" / cfg.run_id, {**good, "epochs": -1})
    assert "settings no run can have" in check_config(tmp_path / "b" / cfg.run_id).reason
    write(tmp_path / "c" / cfg.run_id, json.dumps(good)[:50])
    assert check_config(tmp_path / "c" / cfg.run_id).state == "broken"
    assert check_config(tmp_path / "none").state == "missing"
    write(tmp_path / "mae0", {"method": "mae", "seed": 0})  # synthetic, no run id: unchecked
    assert check_config(tmp_path / "mae0").state == "ok"
