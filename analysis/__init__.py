"""Layer-wise backdoor analysis of image classifiers (Jebreel, Domingo-Ferrer, Li).

Import what you need from its module, e.g. ``from analysis.detection import LayerwiseDetector``; the README's
"What is in the box" lists the modules. Importing this package imports nothing else, so that
``python -m analysis --help`` answers without importing torch.
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
