"""Train -> save -> export -> ``qmoe.runtime``: the runtime's predictions are the trial's deployed
predictions, for every quantizer and a curious mixture; and the runtime never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import qmoe.runtime
from qmoe.data.splits import train_val_test_indices
from qmoe.export.lower import export_trial
from qmoe.export.saved import load_saved_trial
from qmoe.native import aot
from qmoe.quant import deploy, list_quantizers
from qmoe.runtime.format import read_model_file
from qmoe.spec import TrainConfig, TrialSpec
from qmoe.trial import run_trial, standardise

ROOT = Path(__file__).resolve().parents[3]
MODELS = [*list_quantizers(), "bitnet,q4,q8", "bitnet,q4,q8/entropy"]  # /: the curiosity variant
#: Whether this machine builds the ahead-of-time kernels (x86-64 Linux with a C compiler).
AOT_HERE = bool(aot.host_levels()) and aot.c_compiler() is not None


def quick(model: str) -> TrialSpec:
    model, _, curiosity = model.partition("/")
    mixture = "," in model
    cfg = TrainConfig.defaults(mixture).replace(max_epochs=3)
    return TrialSpec(dataset="synth", fold=2, experts=tuple(model.split(",")), alpha=0.3 if mixture else 0.0,
                     curiosity=curiosity or "kl", train=cfg, latency_runs=20, measure_energy=False)


@pytest.fixture(scope="module")
def exported(synth_table, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("exported")
    out = {}
    for model in MODELS:
        folder = base / model.replace(",", "-").replace("/", "-")
        run_trial(quick(model), synth_table, save_dir=folder)
        path = export_trial(str(folder), base / f"{model.replace(',', '-').replace('/', '-')}.qmoe", storage=base).path
        out[model] = (folder, path)
    return out


@pytest.mark.parametrize("model", MODELS)
def test_runtime_predicts_what_the_trial_deployed(exported, synth_table, model: str) -> None:
    folder, path = exported[model]
    saved = load_saved_trial(folder)
    split = train_val_test_indices(synth_table, saved.spec.fold, protocol=saved.spec.protocol,
                                   seed=saved.deploy_seed)
    runtime = qmoe.runtime.load(path)
    pred = runtime.predict(synth_table.X[split.test])  # raw rows: the runtime standardises
    test = saved.info["test"]
    assert test["clip_id"] == [str(c) for c in synth_table.clip_ids[split.test]]
    assert pred.labels.tolist() == test["pred"]  # exactly the trial's deployed predictions
    assert (pred.experts is None) == ("," not in model)
    if pred.experts is not None:
        assert pred.experts.tolist() == test["expert"]
    # and the very logits of the deployed torch model, deployed again from the saved weights
    deployed = deploy(saved.build_model(), seed=saved.deploy_seed)
    with torch.no_grad():
        out = deployed(standardise(synth_table, split.train, split.test))
    logits = out.logits if hasattr(out, "logits") else out
    np.testing.assert_array_equal(pred.logits, logits.numpy())
    # the ahead-of-time kernels ran, where this machine has them; numba's compute the same
    assert runtime.kernels.startswith("ahead-of-time" if AOT_HERE else "numba JIT")
    jit = qmoe.runtime.load(path, kernels="jit")
    assert jit.kernels.startswith("numba JIT")
    np.testing.assert_array_equal(jit.predict(synth_table.X[split.test]).logits, pred.logits)


def test_the_file_holds_what_the_header_says(exported) -> None:
    _, path = exported["bitnet,q4,q8"]
    data = read_model_file(path)
    assert [name for name, _ in data.experts] == ["bitnet", "q4", "q8"]
    assert [layer.kind for layer in data.experts[0][1]] == ["ternary"] * 4
    assert [layer.kind for layer in data.experts[1][1]] == ["int8"] * 4
    assert data.router is not None and data.router.masks.shape == (10, 128)
    assert data.alpha == pytest.approx(0.3) and data.curiosity == "kl" and data.top_k == 1
    assert data.trial["trial_key"] == quick("bitnet,q4,q8").trial_key
    entropy = read_model_file(exported["bitnet,q4,q8/entropy"][1])
    assert entropy.curiosity == "entropy" and entropy.trial["trial_key"] == quick("bitnet,q4,q8/entropy").trial_key
    _, single = exported["q1"]
    assert [layer.kind for layer in read_model_file(single).experts[0][1]] == ["pm1"] * 3


def test_qmoe_predict_runs_without_torch(exported, synth_table, tmp_path: Path) -> None:
    folder, path = exported["bitnet,q4,q8"]
    code = f"""
import json, sys
from qmoe.cli.main import main
rc = main(["predict", {str(path)!r}, "--data", {str(synth_table.source)!r}, "--fold", "2",
           "--out", {str(tmp_path / "p.csv")!r}, "--stats"])
assert "torch" not in sys.modules, "torch was imported"
print(json.dumps([rc, [m for m in ("torch", "pandas", "sklearn", "ray", "numba", "llvmlite") if m in sys.modules]]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    rc, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    if AOT_HERE:  # the ahead-of-time kernels: no numba, no LLVM
        assert rc == 0 and heavy == []
        assert f"kernels: ahead-of-time for {aot.host_levels()[0].name}" in done.stderr
    else:  # elsewhere numba's, and the stats say why
        assert rc == 0 and set(heavy) == {"numba", "llvmlite"}
        assert "no ahead-of-time kernels" in done.stderr
    assert "torch imported: no" in done.stderr and "peak RSS" in done.stderr
    import csv

    with open(tmp_path / "p.csv") as fh:
        rows = list(csv.DictReader(fh))
    test = load_saved_trial(folder).info["test"]
    assert [r["clip_id"] for r in rows] == test["clip_id"]
    assert [int(r["pred"]) for r in rows] == test["pred"]
    assert [r["expert"] for r in rows] == [["bitnet", "q4", "q8"][e] for e in test["expert"]]
    assert [r["label_name"] for r in rows] == [synth_table.label_names[p] for p in test["pred"]]
