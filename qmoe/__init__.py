"""qmoe: curiosity-driven quantized mixture-of-experts, the science core.

The core never imports ray, typer or rich: the orchestration, the analysis and the CLI are the
sub-packages ``qmoe.sweeps``, ``qmoe.analysis`` and ``qmoe.cli``, kept in the repository's
top-level folders ``sweeps/``, ``analysis/`` and ``cli/`` (see setup.py), and imported only
by each other, downwards; ``tests/test_layering.py`` enforces it.
"""

__version__ = "0.3.0"
