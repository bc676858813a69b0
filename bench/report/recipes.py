"""Which recipe each row ran at, and how it was chosen: one shared recipe for every row, each
row at its own recipe chosen by `bench tune` on a validation split of the training data
(OUT/tuning.json; bench.plan.tune), or recipes that differ without tuning. Tuning trials
(runs with `val_fraction`) are not rows of the comparison: the report keeps them apart and
shows their scores in the tuning table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.files import TUNING
from bench.report.tables import Cell, Table

RECIPE_COLUMNS = ("base_lr", "weight_decay", "decoder", "warm-up")


def is_trial(config: Mapping[str, Any]) -> bool:
    """A tuning trial: scored on a validation split, not a run of the comparison."""
    return config.get("val_fraction") is not None


def recipe(config: Mapping[str, Any]) -> dict[str, str]:
    """A run's recipe as the report words it (`RECIPE_COLUMNS`)."""
    epochs = config.get("warmup_epochs", 1.0)
    warm = (f"{config['warmup']:g} of the schedule" if config.get("warmup") is not None
            else f"{epochs:g} epoch{'' if epochs == 1 else 's'}")
    decoder = ("conv (3 layers)" if config.get("decoder") == "conv"
               else f"transformer, depth {config.get('decoder_depth', 2)}")
    return {"base_lr": f"{config.get('base_lr', 1.5e-3):g}",
            "weight_decay": f"{config.get('weight_decay', 0.05):g}",
            "decoder": decoder, "warm-up": warm}


@dataclass
class Tunings:
    """Every tuning.json found at the top of the reported folders, and the run ids of the
    comparison runs each chose a recipe for."""

    records: list[dict[str, Any]]

    @property
    def tuned_runs(self) -> set[str]:
        return {run for rec in self.records for row in rec["rows"] for run in row["runs"]}


def read_tunings(dirs: Sequence[Path]) -> Tunings:
    records = []
    for d in dirs:
        path = Path(d) / TUNING
        if path.is_file():
            records.append(json.loads(path.read_text()))
    return Tunings(records)


def recipe_table(rows: list[tuple[str, str, bool]], configs: Mapping[str, Mapping[str, Any]],
                 run_ids: Mapping[str, str], tunings: Tunings, title: str
                 ) -> tuple[Table, str]:
    """The recipe of each row (`rows`: label, a run folder of it, is a reference row) and
    whether `bench tune` chose it, and the sentence that says how the section's recipes were
    set: "each at its tuned recipe", "one shared recipe" or that they differ untuned."""
    tuned = tunings.tuned_runs
    table_rows, compared = [], {}
    for label, run_dir, reference in rows:
        r = recipe(configs.get(run_dir, {}))
        how = ("– (reference row)" if reference else
               "bench tune" if run_ids.get(run_dir) in tuned else "as set")
        table_rows.append([Cell(label), *(Cell(r[c]) for c in RECIPE_COLUMNS), Cell(how)])
        if not reference:
            compared[label] = (r, how)
    recipes = {json.dumps(r, sort_keys=True) for r, _ in compared.values()}
    if compared and all(how == "bench tune" for _, how in compared.values()):
        sentence = ("Recipes: each at its tuned recipe, chosen by bench tune on a validation "
                    "split of the training data (never the test split); see the tuning table.")
    elif len(recipes) == 1:
        (r, _), *_ = compared.values()
        sentence = ("Recipes: one shared recipe for every row ("
                    + ", ".join(f"{k} {v}" for k, v in r.items()) + "), not tuned per method.")
    else:
        sentence = ("Recipes: rows differ in recipe and not all were tuned "
                    "(bench tune): the comparison mixes strategy with recipe.")
    return Table(title, ["row", *RECIPE_COLUMNS, "chosen by"], table_rows), sentence


def tuning_tables(tunings: Tunings) -> list[Table]:
    """Per tuning.json: every tuned row's grid points with their mean validation score over
    the trial seeds, the chosen one marked (bold)."""
    tables = []
    for rec in tunings.records:
        keys = list(rec["grid"])
        rows = []
        for row in rec["rows"]:
            options = row.get("options") or {}
            label = row["method"] + (f" {json.dumps(options, sort_keys=True)}"
                                     if len(rec["rows"]) > 1 and _differs(rec, row) else "")
            for trial in row["trials"]:
                chosen = trial["recipe"] == row["chosen"]
                score = trial["score"]
                values = [Cell(str(trial["recipe"][k]), chosen) for k in keys]
                rows.append([Cell(label, chosen), *values,
                             Cell("–" if score is None else f"{100 * score:.1f}", chosen),
                             Cell(str(len(trial["scores"])), chosen)])
        title = (f"Tuning: {rec['scored_as']} (%) on {rec['val_fraction']:.0%} of the probes' "
                 "training split")
        note = ("Mean over the trial seeds (seeds: n); bold: the recipe each row ran at in the "
                "comparison (best mean; ties: the first). Trials fit the probes on the rest of "
                "the training split; none read the test split.")
        tables.append(Table(title, ["row", *keys, "val score", "seeds"], rows, note))
    return tables


def _differs(rec: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """Whether another tuned row of the same method has other options (label them then)."""
    return any(r is not row and r["method"] == row["method"] for r in rec["rows"])
