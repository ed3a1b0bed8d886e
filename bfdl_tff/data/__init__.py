"""Data: tasks (NIH's 14 findings, binary, multi-class), NIH ChestX-ray14 and MedMNIST metadata
and loaders, hospital manifests, partition schemes, external evaluation data and a synthetic
stand-in in the NIH layout (paper 3.1, issue 15). See ``docs/data.md``.

Submodules are imported on demand (``from bfdl_tff.data import loader``); TensorFlow is imported
only by ``loader`` / ``federation`` / ``prepare``."""
