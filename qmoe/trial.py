"""One trial, end to end, with no Ray inside: train, deploy, measure, record (DESIGN §5-§7)."""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from qmoe.data.datasets import official_folds_of
from qmoe.data.splits import refold, train_val_test_indices
from qmoe.data.table import EmbeddingTable
from qmoe.export.saved import check_save_dir, save_trial_model
from qmoe.errors import ConfigError, UnknownNameError
from qmoe.latency import measure_latency, pinned_to_one_core
from qmoe.layout import IN_SWEEP
from qmoe.measure import (KG_TO_G, KG_TO_UG, KWH_TO_MJ, KWH_TO_WH, EnergyMeter, measure_throughput,
                          peak_rss_mb, reset_peak_rss, torch_threads)
from qmoe.models import Expert, MixtureOfExperts, MoEOutput
from qmoe.quant import deploy, deploy_form, get_quantizer, size_report
from qmoe.record import TrialRecord, now_iso
from qmoe.routing_stats import routing_samples, routing_summary
from qmoe.spec import TrialSpec
from qmoe.train import fit

log = logging.getLogger(__name__)
ENERGY_INFERENCES = 500  # batch-1 inferences in the fixed loop measured for energy


@dataclass(frozen=True)
class TrialResult:
    """The record (one results-table row) and, for mixtures, the per-sample routing."""

    record: TrialRecord
    samples: pd.DataFrame | None  # clip_id, expert, confidence, uncertainty, kl, correct, ...


def check_spec(spec: TrialSpec, table: EmbeddingTable) -> None:
    """Raise a QmoeError naming the flag when the spec cannot run on ``table``."""
    for name in spec.experts:
        try:
            get_quantizer(name)
        except UnknownNameError as err:
            raise UnknownNameError(f"--model: {err}") from None
    table.check_fold(spec.fold)
    official = official_folds_of(table) if spec.split_seed is not None else None
    if official:
        raise ConfigError(f"--repeats (split seed {spec.split_seed}): {official} has official folds, which are "
                          "never reassigned; repeat its trials with training seeds instead (--seeds N)")
    if len(table.fold_ids) < 2:
        raise ConfigError(f"{table.source} has one fold only: a trial needs other folds to train on")


def build_model(spec: TrialSpec, in_dim: int, n_classes: int) -> nn.Module:
    """The expert (single model) or the mixture the spec describes."""
    cfg = spec.train
    assert cfg is not None
    if not spec.is_mixture:
        return Expert(in_dim, n_classes, cfg.hidden, spec.experts[0], cfg.dropout)
    return MixtureOfExperts(in_dim, n_classes, spec.experts, hidden=cfg.hidden, dropout=cfg.dropout,
                            router_dropout=cfg.router_dropout, alpha=spec.alpha, top_k=cfg.top_k,
                            mc_samples=cfg.mc_samples, temperature=cfg.temperature,
                            curiosity=spec.curiosity)


def standard_stats(table: EmbeddingTable, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training rows' float64 (mean, std) per feature; a constant feature gets std 1."""
    mean = table.X[train_idx].mean(axis=0, dtype=np.float64)
    std = table.X[train_idx].std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return mean, std


def standardise(table: EmbeddingTable, train_idx: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
    """Rows standardised with the training rows' mean and std, as a float32 tensor.

    Args:
        table: the embedding table.
        train_idx: the rows whose statistics are used.
        rows: the rows to return (in this order); None = every row of the table.
    """
    mean, std = standard_stats(table, train_idx)
    x = table.X if rows is None else table.X[rows]
    return torch.from_numpy(((x - mean) / std).astype(np.float32))


def run_trial(spec: TrialSpec, table: EmbeddingTable, *, threads: int = 1,
              save_dir: str | Path | None = None) -> TrialResult:
    """Train and measure one trial; identical inputs give identical quality metrics.

    Args:
        spec: what to train (model, fold, alpha, protocol, seed, hyper-parameters).
        table: the embedding table.
        threads: torch intra-op threads for training (latency is always timed on one).
        save_dir: keep the trained model in this folder (:mod:`qmoe.export.saved`; replaced
            if a previous save is there), for ``qmoe export``. None: keep nothing.

    Raises:
        QmoeError: bad spec for this table (unknown quantizer, missing fold, ...).
        TrainingError: the loss diverged.
    """
    check_spec(spec, table)
    if save_dir is not None:
        check_save_dir(save_dir)  # before training, not after
    if spec.split_seed is not None:
        table = refold(table, spec.split_seed)  # the same folds in every trial of this split seed
    cfg = spec.train
    assert cfg is not None
    started = now_iso()
    seed = spec.trial_seed
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    split = train_val_test_indices(table, spec.fold, protocol=spec.protocol, seed=seed)
    x_all = standardise(table, split.train)
    x_train, x_val, x_test = x_all[split.train], x_all[split.val], x_all[split.test]
    y_train, y_val, y_test = table.y[split.train], table.y[split.val], table.y[split.test]
    model = build_model(spec, table.dim, table.n_classes)

    reset_peak_rss()
    meter = EnergyMeter() if spec.measure_energy else None
    with torch_threads(threads):
        if meter is not None:
            with meter.measure("train") as train_energy:
                result = fit(model, x_train, y_train, x_val, y_val, cfg,
                             n_classes=table.n_classes, seed=seed)
        else:
            train_energy = []
            result = fit(model, x_train, y_train, x_val, y_val, cfg,
                         n_classes=table.n_classes, seed=seed)

    deployed = deploy(model, seed=seed)  # the mixture freezes its router masks from the trial seed
    with torch.no_grad(), torch_threads(threads):
        out = deployed(x_test)
    logits = out.logits if isinstance(out, MoEOutput) else out
    y_pred = logits.argmax(dim=1).numpy()

    def infer(x: torch.Tensor) -> object:
        return deployed(x)

    lat = measure_latency(infer, x_test, runs=spec.latency_runs)  # one core, to a stated precision
    with pinned_to_one_core():
        throughput = measure_throughput(infer, x_test)
    energy: dict[str, object] = {"energy_method": "off"}
    if meter is not None:
        with torch.no_grad(), torch_threads(1), meter.measure("inference") as inf_energy:
            for i in range(ENERGY_INFERENCES):
                deployed(x_test[i % len(x_test)].unsqueeze(0))
        e_train, e_inf = train_energy[0], inf_energy[0]
        energy = {"train_energy_wh": e_train.kwh * KWH_TO_WH, "train_co2_g": e_train.co2_kg * KG_TO_G,
                  "energy_per_inference_mj": e_inf.kwh * KWH_TO_MJ / ENERGY_INFERENCES,
                  "co2_per_inference_ug": e_inf.co2_kg * KG_TO_UG / ENERGY_INFERENCES,
                  "energy_method": e_inf.method}
    size = size_report(model)

    routing: dict[str, object] = {}
    samples = None
    if isinstance(out, MoEOutput):
        names = list(model.names)
        samples = routing_samples(out, names, table.clip_ids[split.test], y_test, y_pred)
        summary, entropy = routing_summary(samples, names)
        routing = {"routing": json.dumps(summary, sort_keys=True), "routing_entropy": entropy}
    if save_dir is not None:
        _save(save_dir, spec, table, split.train, split.test, model, out, y_pred)

    record = TrialRecord(
        **TrialRecord.identity(spec),
        n_classes=table.n_classes, embedding_dim=table.dim, n_train=len(split.train),
        n_val=len(split.val), n_test=len(split.test),
        f1_macro=float(f1_score(y_test, y_pred, average="macro", zero_division=0)),
        f1_weighted=float(f1_score(y_test, y_pred, average="weighted", zero_division=0)),
        accuracy=float(accuracy_score(y_test, y_pred)), val_f1_macro=result.best_val_f1,
        deploy_form=deploy_form(deployed), latency_mode=IN_SWEEP, **lat.columns(), throughput_bs256=throughput,
        peak_rss_mb=peak_rss_mb(), params=size.n_params,
        size_kb=size.size_kb, compression=size.compression, train_seconds=result.seconds,
        epochs=result.epochs, best_epoch=result.best_epoch, **energy, **routing,
        status="ok", node=platform.node(), started_at=started, finished_at=now_iso())
    return TrialResult(record=record, samples=samples)


def _save(path: str | Path, spec: TrialSpec, table: EmbeddingTable, train_idx: np.ndarray,
          test_idx: np.ndarray, model: nn.Module, out: object, y_pred: np.ndarray) -> None:
    """Keep the trained model and what its export needs (see :mod:`qmoe.export.saved`)."""
    mean, std = standard_stats(table, train_idx)
    test: dict[str, object] = {"clip_id": [str(c) for c in table.clip_ids[test_idx]],
                               "pred": [int(p) for p in y_pred]}
    if isinstance(out, MoEOutput):
        test["expert"] = [int(e) for e in out.selected[:, 0].tolist()]
    source = {"source": table.source, "dataset": table.meta.get("dataset", spec.dataset),
              "content_hash": table.content_hash(), "backbone": table.meta.get("backbone")}
    size = save_trial_model(path, spec=spec, model=model, mean=mean, std=std,
                            class_names=tuple(table.label_names), table=source, test=test)
    log.info("saved the trained model of trial %s in %s (%d bytes)", spec.trial_key, path, size)
