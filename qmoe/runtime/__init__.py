"""Run an exported model (``.qmoe``) without torch: numpy and the compiled numba kernels.

::

    import qmoe.runtime
    model = qmoe.runtime.load("model.qmoe")   # validate, then lower for this CPU's kernels
    pred = model.predict(X)                    # X: (N, D) raw embeddings
    pred.labels, pred.experts                  # class ids; each row's top-1 expert (mixtures)

Nothing here imports torch (a test asserts it): :mod:`qmoe.runtime.format` reads the file
(safetensors + JSON), :mod:`qmoe.native` computes.
"""

from qmoe.runtime.model import Model, Prediction, load

__all__ = ["Model", "Prediction", "load"]
