"""``best.toml`` of a tuning run: the best settings so far, their score, and where they came from.

``[hparams]`` is what ``qmoe sweep ... --hparams best.toml`` reads (:func:`qmoe.sweeps.overrides.load_hparams`);
``[tune]`` is the provenance: the objective, the scores of the best and the default settings,
the budget, the table, the space and the versions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from qmoe.record import now_iso, package_version

from qmoe.sweeps.tune.space import SearchSpace
from qmoe.sweeps.tune.tuning_table import best_row, counted, default_row


def toml_value(value: Any) -> str:
    """A TOML value for a str, bool, int, float, list or flat dict."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def best_toml(manifest: Mapping[str, Any], rows: pd.DataFrame, *, name: str, study: Path, tuning_table: Path,
              best_path: Path) -> str | None:
    """The text of ``best.toml`` of tuning run ``name`` (whose files are at ``study``,
    ``tuning_table`` and ``best_path``): ``[hparams]`` (what ``qmoe sweep --hparams`` reads) and ``[tune]``.

    ``[hparams]`` holds the space's fixed settings and the best trial's searched values: every
    setting that differs from the defaults when that score was obtained.
    """
    best = best_row(rows)
    if best is None:
        return None
    default = default_row(rows)
    space = SearchSpace.from_dict(manifest["space"])
    hparams = {**space.fixed, **json.loads(best["params"])}
    folds = manifest["folds"]
    tune: dict[str, Any] = {
        "name": name,
        "objective": f"mean validation macro-F1 over folds {','.join(map(str, folds))} (clean protocol: "
                     "each fold's validation split carved from its training folds; its test fold never read)",
        "score": float(best["objective"]),
        "trial": int(best["trial"]),
        "status": best["status"],
        "fold_f1": {str(k): v for k, v in json.loads(best["fold_f1"] or "{}").items()},
    }
    if default is not None:
        tune.update(default_score=float(default["objective"]), default_trial=int(default["trial"]))
    tune.update(trials_finished=counted(rows), trials_requested=int(manifest["trials"]),
                model=manifest["model"], dataset=manifest["table"]["name"],
                table_hash=manifest["table"]["content_hash"], folds=list(folds), seed=int(manifest["seed"]),
                space=space.source, study=str(study), tuning_table=str(tuning_table),
                written_at=now_iso(), qmoe_version=manifest.get("qmoe_version", ""),
                optuna_version=package_version("optuna"), ray_version=package_version("ray"),
                caveat="settings tuned on these folds have seen each fold's rows through the other folds' "
                       "training/validation splits; for a strictly nested estimate tune once per test fold")
    lines = [f"# The best settings of tuning run {name!r} (qmoe tune).",
             f"# Use them with: qmoe sweep ... --hparams {best_path}",
             "", "[hparams]"]
    lines += [f"{k} = {toml_value(list(v) if isinstance(v, tuple) else v)}" for k, v in hparams.items()]
    lines += ["", "[tune]"] + [f"{k} = {toml_value(v)}" for k, v in tune.items()]
    return "\n".join(lines) + "\n"
