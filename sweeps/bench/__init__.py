"""The Ray side of ``qmoe bench``: sweep efficiency against the trials run one by one and
against Ray Tune's defaults, the sweep driver's memory, and feature extraction on Ray.

- :mod:`~qmoe.sweeps.bench.jobs`: a benchmark's trials as a job file; the one-by-one reference;
- :mod:`~qmoe.sweeps.bench.ray_defaults`: the same trials through Ray Tune with its defaults;
- :mod:`~qmoe.sweeps.bench.sweep_efficiency`: our sweeps against both (8 short trials; Table 1
  at ESC-50 size, ``table1.toml``);
- :mod:`~qmoe.sweeps.bench.driver_memory`: the driver's RSS over a long sweep;
- :mod:`~qmoe.sweeps.bench.extraction_speed`: clips per second of extraction on Ray.

The targets these are held to live in :mod:`qmoe.bench_targets`.
"""
