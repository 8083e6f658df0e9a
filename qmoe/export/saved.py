"""A trial's trained model kept on disk: what ``qmoe export`` needs, and nothing it does not.

``run_trial(..., save_dir=DIR)`` (``qmoe trial --save DIR``) writes one folder per trial::

    DIR/model.safetensors   the trained model's state dict (float32, best-validation weights)
                            + ``standardise.mean`` / ``standardise.std`` (float64, the training
                            rows' statistics the trial standardised with)
    DIR/trial.json          format + version, trial key, the trial spec (its key fields), the
                            deploy seed, embedding size, class names, the table it trained on,
                            the deployed model's test-fold predictions, versions

Both files are plain data (safetensors and JSON, no pickle) and written atomically: the folder
is built beside ``DIR`` and renamed into place, so a crash leaves the old folder or none.
:func:`load_saved_trial` checks everything it reads (format, version, the spec's key against
the stored key, tensor names and shapes against the rebuilt model).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import qmoe
from qmoe.errors import ConfigError, DataError
from qmoe.spec import TrainConfig, TrialSpec

SAVED_FORMAT = "qmoe-trial-model"
SAVED_VERSION = 1
MODEL_FILE = "model.safetensors"
INFO_FILE = "trial.json"
#: Prefixes of the tensors in :data:`MODEL_FILE`.
MODEL_PREFIX, STD_PREFIX = "model.", "standardise."


@dataclass(frozen=True, kw_only=True, eq=False)
class SavedTrial:
    """A saved trial, read back and checked.

    Attributes:
        path: its folder.
        spec: the trial spec (``spec.trial_key`` equals the stored key).
        deploy_seed: the seed the trial deployed its model with (``spec.trial_seed``).
        in_dim: embedding dimension D.
        class_names: index = class id.
        mean, std: float64 (D,) standardisation of the inputs: ``(x - mean) / std``.
        state_dict: the trained model's tensors.
        info: the whole ``trial.json`` (table, test predictions, versions).
    """

    path: Path
    spec: TrialSpec
    deploy_seed: int
    in_dim: int
    class_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any]

    @property
    def trial_key(self) -> str:
        return self.spec.trial_key

    def build_model(self) -> nn.Module:
        """The trained model (eval mode), rebuilt from the spec and loaded with the weights.

        Raises:
            DataError: the weights do not fit the model the spec describes.
        """
        from qmoe.trial import build_model  # qmoe.trial imports this module

        model = build_model(self.spec, self.in_dim, len(self.class_names))
        own = model.state_dict()
        missing = sorted(set(own) - set(self.state_dict))
        unknown = sorted(set(self.state_dict) - set(own))
        wrong = [k for k in own if k in self.state_dict and self.state_dict[k].shape != own[k].shape]
        if missing or unknown or wrong:
            first = (missing or unknown or wrong)[0]
            raise DataError(f"{self.path / MODEL_FILE}: its tensors do not fit the model of {self.spec.model} "
                            f"({len(missing)} missing, {len(unknown)} unknown, {len(wrong)} with another "
                            f"shape; first: {first}); save the trial again")
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def spec_to_json(spec: TrialSpec) -> dict[str, Any]:
    """The spec's identifying fields (what its key hashes) plus how it was configured."""
    return {**spec.key_fields(), "hparams_source": spec.hparams_source}


def spec_from_json(data: Mapping[str, Any]) -> TrialSpec:
    """Inverse of :func:`spec_to_json`."""
    fields = dict(data)
    train = TrainConfig(**{**fields.pop("train"), "hidden": tuple(data["train"]["hidden"])})
    return TrialSpec(**{**fields, "experts": tuple(fields["experts"]), "train": train})


def check_save_dir(path: str | Path) -> Path:
    """``path`` as a save folder, refused now (before training) if it cannot be one.

    A missing or empty folder, or one holding a saved trial (it is replaced), is fine.

    Raises:
        ConfigError: a file, or a folder holding other things, or not writable.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--save {path} is a file; give a folder (it is created)")
    if path.is_dir() and any(path.iterdir()) and not (path / INFO_FILE).is_file():
        raise ConfigError(f"--save {path} holds other files; give a new or empty folder "
                          "(or one a previous --save wrote, which is replaced)")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--save {path}: cannot create {parent} ({err.strerror or err})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--save {path}: cannot write in {parent}; pick a writable location")
    return path


def save_trial_model(path: str | Path, *, spec: TrialSpec, model: nn.Module, mean: np.ndarray,
                     std: np.ndarray, class_names: tuple[str, ...], table: Mapping[str, Any],
                     test: Mapping[str, Any]) -> int:
    """Write the saved trial folder ``path`` atomically (see the module docstring).

    Args:
        path: the folder (created; a previous save there is replaced).
        spec: the trial.
        model: the trained model (best-validation weights).
        mean, std: the standardisation statistics, float64 (D,).
        class_names: index = class id.
        table: where the data came from (source, dataset, content hash, backbone).
        test: the deployed model's test-fold predictions (clip_id, pred, expert).

    Returns:
        Bytes written.
    """
    from safetensors.torch import save_file

    path = check_save_dir(path)
    tensors = {MODEL_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tensors[STD_PREFIX + "mean"] = torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float64))
    tensors[STD_PREFIX + "std"] = torch.from_numpy(np.ascontiguousarray(std, dtype=np.float64))
    info = {
        "format": SAVED_FORMAT, "version": SAVED_VERSION, "trial_key": spec.trial_key,
        "spec": spec_to_json(spec), "deploy_seed": spec.trial_seed, "in_dim": int(len(mean)),
        "class_names": list(class_names), "table": dict(table), "test": dict(test),
        "qmoe_version": qmoe.__version__, "torch_version": torch.__version__,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    old = tmp.with_name(tmp.name + "-old")
    try:
        tmp.mkdir()
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": SAVED_FORMAT})
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
        # safetensors creates its file 0600; a sweep's models on shared storage must be readable
        # like its other files: the mode open() gave trial.json (the umask's).
        os.chmod(tmp / MODEL_FILE, (tmp / INFO_FILE).stat().st_mode & 0o777)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return sum(f.stat().st_size for f in path.iterdir())


def load_saved_trial(path: str | Path) -> SavedTrial:
    """Read and check a folder written by :func:`save_trial_model`.

    Raises:
        DataError: not a saved trial, another format version, or inconsistent contents.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    info_path = path / INFO_FILE
    if not info_path.is_file() or not (path / MODEL_FILE).is_file():
        raise DataError(f"{path}: not a saved trial (no {INFO_FILE} and {MODEL_FILE}); "
                        "save one with qmoe trial --save DIR")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{info_path}: unreadable ({err}); save the trial again") from None
    if not isinstance(info, dict) or info.get("format") != SAVED_FORMAT:
        raise DataError(f"{info_path}: not a saved qmoe trial (format {info.get('format') if isinstance(info, dict) else None!r})")
    if info.get("version") != SAVED_VERSION:
        raise DataError(f"{info_path}: saved-trial version {info.get('version')!r}; this qmoe reads "
                        f"version {SAVED_VERSION}: use the qmoe that saved it")
    try:
        spec = spec_from_json(info["spec"])
        key, seed, in_dim = str(info["trial_key"]), int(info["deploy_seed"]), int(info["in_dim"])
        names = tuple(str(n) for n in info["class_names"])
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as err:
        reason = f"{type(err).__name__}: {err}" if not isinstance(err, ConfigError) else str(err)
        raise DataError(f"{info_path}: incomplete or invalid ({reason}); save the trial again") from None
    if spec.trial_key != key:
        raise DataError(f"{info_path}: its spec hashes to trial key {spec.trial_key}, not the stored {key}; "
                        "the file was edited or written by another qmoe version")
    try:
        tensors = load_file(str(path / MODEL_FILE), device="cpu")
    except (SafetensorError, OSError) as err:
        raise DataError(f"{path / MODEL_FILE}: unreadable ({err}); save the trial again") from None
    mean, std = tensors.pop(STD_PREFIX + "mean", None), tensors.pop(STD_PREFIX + "std", None)
    if mean is None or std is None or mean.shape != (in_dim,) or std.shape != (in_dim,):
        raise DataError(f"{path / MODEL_FILE}: no standardisation statistics of {in_dim} values; save the trial again")
    state = {k.removeprefix(MODEL_PREFIX): v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    return SavedTrial(path=path, spec=spec, deploy_seed=seed, in_dim=in_dim, class_names=names,
                      mean=mean.numpy(), std=std.numpy(), state_dict=state, info=info)


def find_saved_trial(ref: str, storage: str | Path) -> Path:
    """The folder of a saved trial: ``ref`` itself if it is a folder, else the trial key ``ref``
    looked up as ``STORAGE/*/models/REF/`` (where sweeps keep their trials' models).

    Raises:
        DataError: nothing found, or the key is saved in several sweeps.
    """
    direct = Path(ref).expanduser()
    if direct.is_dir():
        return direct
    storage = Path(storage).expanduser()
    is_key = re.fullmatch(r"[0-9a-f]{16}", ref) is not None  # TrialSpec.trial_key; never a glob pattern
    hits = sorted(p for p in storage.glob(f"*/models/{ref}") if (p / INFO_FILE).is_file()) if is_key else []
    if not hits:
        raise DataError(f"{ref}: neither a folder nor a trial key saved under {storage}/*/models/; give the "
                        "folder of qmoe trial --save DIR, or the key of a trial a sweep kept (--storage)")
    if len(hits) > 1:
        raise DataError(f"trial key {ref} is saved in {len(hits)} sweeps ({', '.join(str(h) for h in hits[:3])}); "
                        "give the folder instead")
    return hits[0]
