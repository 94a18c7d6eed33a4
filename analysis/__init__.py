"""Layer-wise backdoor analysis of image classifiers (Jebreel, Domingo-Ferrer, Li).

Modules: ``data`` (datasets and splits), ``models`` (ResNet-18, MobileNetV2 with the
paper's layer lists), ``features`` (hook-based extraction), ``similarity`` (centroids,
cosine), ``detection`` (the layer-wise detector), ``attacks``, ``training``,
``metrics``, ``evaluation``, ``checkpoints``, ``plotting``, ``pipeline``, ``cli``.
"""
__version__ = "0.1.0"
__all__ = ["LayerwiseDetector", "layer_of_interest", "__version__"]


def __getattr__(name: str):
    """``analysis.LayerwiseDetector`` and ``analysis.layer_of_interest``, imported on first use (PEP 562), so that
    ``python -m analysis --help`` answers without importing torch."""
    if name in ("LayerwiseDetector", "layer_of_interest"):
        from . import detection

        return getattr(detection, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
