"""Canonical layers of every kind, and the documented arithmetic in numpy (the reference)."""

from __future__ import annotations

import numpy as np

from qmoe.native import Layer
from qmoe.native.kernels import load

#: Canonical kinds with the integer values their weights take (None: float); "int4" is an
#: int8 layer whose weights fit -8..7 (q4), which has a layout of its own.
VALUES = {"fp32": None, "q16": (-32768, 32767), "int8": (-128, 127), "int4": (-8, 7), "int2": (-2, 1),
          "pm1": (-1, 1), "ternary": (-1, 1), "binary": (-1, 1)}


def make_layer(kind: str, n: int, d: int, relu: bool, rng: np.random.Generator) -> Layer:
    """A random layer of ``kind`` (N, D) whose outputs are of order one."""
    bias = rng.standard_normal(n).astype(np.float32)
    if kind == "fp32":
        w = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
        return Layer(kind=kind, weight=w, bias=bias, relu=relu)
    lo, hi = VALUES[kind]
    if kind in ("pm1", "binary"):
        w = rng.choice(np.array([-1, 1]), size=(n, d))
    else:
        w = rng.integers(lo, hi + 1, size=(n, d))
    rescale = (rng.uniform(0.5, 2.0, n) / (np.sqrt(d) * max(abs(lo), hi))).astype(np.float32)
    return Layer(kind="int8" if kind == "int4" else kind, weight=w, bias=bias, rescale=rescale, relu=relu,
                 tau=0.05 if kind == "binary" else None)


def make_mlp(kind: str, dims: tuple[int, ...], seed: int = 0) -> list[Layer]:
    rng = np.random.default_rng(seed)
    return [make_layer(kind, b, a, i < len(dims) - 2, rng) for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a b + c`` of float32 arrays rounded once to float32 (ties to even), as ``llvm.fma``,
    for finite results. The product is exact in float64 and TwoSum gives the float64 sum ``s``
    and its exact error ``e``; ``s`` rounds to the same float32 as the exact sum unless it lies
    exactly halfway between two float32 values with ``e`` pointing away from the one
    ``float32(s)`` chose: then the exact sum rounds to the other."""
    a, b, c = (np.asarray(v, np.float32) for v in (a, b, c))
    p, c64 = a.astype(np.float64) * b.astype(np.float64), c.astype(np.float64)
    s = p + c64
    t = s - p
    e = (p - (s - t)) + (c64 - t)  # p + c = s + e exactly
    r = s.astype(np.float32)
    beyond = np.nextafter(r, np.where(s > r, np.float32(np.inf), np.float32(-np.inf)))  # neighbour on s's side
    halfway = (s != r) & (s == (r.astype(np.float64) + beyond.astype(np.float64)) / 2)
    return np.where(halfway & (e != 0) & ((e > 0) == (s > r)), beyond, r).astype(np.float32)


def reference(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    """The documented arithmetic of each kind (qmoe.native.layers), in numpy: int64 dots, then
    the float32 steps in the documented order; fp32 sums in input order, one fused multiply-add
    per input."""
    h = np.asarray(x, np.float32)
    for layer in layers:
        w = np.asarray(layer.weight)
        if layer.kind == "fp32":
            y = np.zeros((h.shape[0], w.shape[0]), np.float32)
            for i in range(w.shape[1]):  # float32 sums in input order, one rounding per step
                y = fma32(h[:, i: i + 1], w[:, i], y)
            y = y + layer.bias
        elif layer.kind == "binary":
            xb = np.where(h > np.float32(layer.tau), 1, -1)
            beta = load().drivers.mean_abs_rows(np.ascontiguousarray(h))  # (B, 1), the kernels' own order
            y = (xb @ w.astype(np.int64).T).astype(np.float32) * (beta * layer.rescale) + layer.bias
        else:
            s = (np.float32(1.0) / np.maximum(np.abs(h).max(axis=1, keepdims=True), np.float32(1e-8))) * np.float32(127)
            x_int = np.rint(h * s).astype(np.int64)  # (B, D), half to even as torch
            y = (x_int @ w.astype(np.int64).T).astype(np.float32) * (layer.rescale / s) + layer.bias
        h = np.maximum(y, np.float32(0.0)) if layer.relu else y
    return h
