"""Layer-wise backdoor analysis of image classifiers (Jebreel, Domingo-Ferrer, Li).

Modules: ``data`` (datasets and splits), ``models`` (ResNet-18, MobileNetV2 with the
paper's layer lists), ``features`` (hook-based extraction), ``similarity`` (centroids,
cosine), ``detection`` (the layer-wise detector), ``attacks``, ``training``,
``metrics``, ``evaluation``, ``checkpoints``, ``plotting``, ``pipeline``, ``cli``.
"""
from .detection import LayerwiseDetector, layer_of_interest

__version__ = "0.1.0"
__all__ = ["LayerwiseDetector", "layer_of_interest", "__version__"]
