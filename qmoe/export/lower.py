"""``qmoe export``: a saved trial -> its deployed form's canonical data -> one ``.qmoe`` file.

The trained model is rebuilt from the saved folder and deployed exactly as the trial deployed
it (:func:`qmoe.quant.deploy` with the trial's seed, which freezes a mixture's router masks).
The deployed model is a thin torch wrapper over :mod:`qmoe.native` objects; their canonical
layers (and the mixture's router and masks) are what the file stores, so the runtime lowers
the very data the trial's deployed model ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import nn

import qmoe
from qmoe.errors import QmoeError
from qmoe.export.saved import SavedTrial, find_saved_trial, load_saved_trial, spec_to_json
from qmoe.native import Layer
from qmoe.runtime.format import VERSION, ModelData, write_model_file


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """What ``qmoe export`` wrote."""

    path: Path
    size_bytes: int
    format_version: int
    trial_key: str
    model: str  # "q4" or "bitnet,q4,q8"
    source: Path  # the saved trial's folder
    deploy_form: str


def deployed_data(saved: SavedTrial) -> tuple[ModelData, str]:
    """The canonical data of the saved trial's deployed model, and its ``deploy_form``.

    Raises:
        QmoeError: the saved weights do not fit the model, or it does not deploy natively.
    """
    from qmoe.models.deployed import DeployedMixture
    from qmoe.quant import deploy, deploy_form

    deployed = deploy(saved.build_model(), seed=saved.deploy_seed)  # as run_trial deploys it
    common: dict[str, Any] = dict(in_dim=saved.in_dim, class_names=saved.class_names, mean=saved.mean,
                                  std=saved.std, trial=_trial_info(saved, deploy_form(deployed)))
    if isinstance(deployed, DeployedMixture):
        native = deployed.native
        data = ModelData(experts=tuple(zip(deployed.names, native.experts)), router=native.router,
                         alpha=native.alpha, curiosity=native.curiosity, top_k=native.top_k, **common)
    else:
        data = ModelData(experts=((saved.spec.experts[0], _expert_layers(deployed, saved)),), **common)
    return data, deploy_form(deployed)


def _expert_layers(deployed: nn.Module, saved: SavedTrial) -> tuple[Layer, ...]:
    native = getattr(deployed._modules.get("net"), "native", None)
    if native is None:
        raise QmoeError(f"{saved.path}: the {saved.spec.model} model did not deploy to one native call; "
                        "it cannot be exported")
    return tuple(native.layers)


def _trial_info(saved: SavedTrial, form: str) -> dict[str, Any]:
    return {"trial_key": saved.trial_key, "model": saved.spec.model, "spec": spec_to_json(saved.spec),
            "deploy_seed": saved.deploy_seed, "deploy_form": form, "table": saved.info.get("table", {}),
            "qmoe_version": qmoe.__version__, "trained_with": saved.info.get("qmoe_version"),
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def export_trial(ref: str, out: str | Path, *, storage: str | Path) -> ExportResult:
    """Export a saved trial (a folder, or a trial key under ``storage``) to ``out``.

    Raises:
        QmoeError: no such saved trial, an inconsistent one, or ``out`` unwritable (one line).
    """
    folder = find_saved_trial(ref, storage)
    saved = load_saved_trial(folder)
    data, form = deployed_data(saved)
    size = write_model_file(out, data)
    return ExportResult(path=Path(out), size_bytes=size, format_version=VERSION, trial_key=saved.trial_key,
                        model=saved.spec.model, source=folder, deploy_form=form)
