"""Issue 8's targets, every one in this one place: what ``qmoe bench`` marks met or not.

Each figure is measured by the benchmark that names it; the targets are for these machines
(2 cores, AVX2, no GPU; DESIGN §12).
"""

from __future__ import annotations

# -- deployed forms (qmoe.bench), batch 1, one thread, vs torch fp32 eager ------------------------
#: Speed-up targets: (label, quantizers, minimum speed-up).
SPEEDUP_TARGETS = (("1-bit >= 8x", ("binary", "q1"), 8.0), ("ternary >= 5x", ("bitnet",), 5.0),
                   ("2-bit >= 5x", ("q2",), 5.0), ("int8 >= 2x", ("q8", "ptq8", "q4"), 2.0))
#: (label, quantizers, most p50 / floor): 1-bit forms within 3x of reading their bytes once.
FLOOR_TARGET = ("1-bit within 3x of its floor", ("binary", "q1"), 3.0)

# -- training and trials (qmoe.bench, qmoe.bench_trial) -------------------------------------------
QAT_EPOCH_TARGET = 1.5  # a QAT epoch takes at most 1.5x the fp32 epoch
SINGLE_TRIAL_TARGET_S = 60.0  # a single-model trial at ESC-50 size, one core, in seconds
RSS_TARGET_MB = 600.0  # peak resident memory of one trial

# -- sweeps (qmoe.sweeps.bench) -------------------------------------------------------------------
SWEEP_RATIO_TARGET = 2.0  # our sweep's efficiency / Ray Tune's defaults', on 8 short trials
SIZED_EFFICIENCY_TARGET = 0.8  # sweep efficiency on Table 1's ESC-50-sized trials
GRID_HOURS_TARGET = 2.0  # the whole paper grid at ESC-50 size on these 2 cores, in hours
