"""Trained models out of a trial: kept on disk (``qmoe trial --save``) and exported as one
``.qmoe`` file (``qmoe export``) that :mod:`qmoe.runtime` runs without torch.

- :mod:`qmoe.export.saved`: a trial's trained model folder (torch).
- :mod:`qmoe.export.lower`: a saved trial -> the deployed form's canonical data -> ``.qmoe``.

The file format itself (writer and validating reader, torch-free) is :mod:`qmoe.runtime.format`.
"""
