"""Data: NIH ChestX-ray14 metadata and loaders, hospital manifests, partition schemes and a
synthetic stand-in in the NIH layout (paper 3.1). See ``docs/data.md``.

Submodules are imported on demand (``from bfdl_tff.data import loader``); TensorFlow is imported
only by ``loader`` / ``federation`` / ``prepare``."""
