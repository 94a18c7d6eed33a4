"""The notebooks' widget apps: one shared layer (:mod:`.base`) and one module per family of figures."""
from .base import App, show_figure
from .layerwise import AdaptiveApp, ExplorerApp, RateApp, ScoreApp, SingleLayerApp, ThresholdApp

__all__ = ["AdaptiveApp", "App", "ExplorerApp", "RateApp", "ScoreApp", "SingleLayerApp", "ThresholdApp",
           "show_figure"]
