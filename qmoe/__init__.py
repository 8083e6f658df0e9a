"""qmoe: curiosity-driven quantized mixture-of-experts, the science core.

This package never imports ray, typer or rich (the orchestration and CLI live in
``sweeps`` and ``cli``); a test enforces it.
"""

__version__ = "0.1.0"
