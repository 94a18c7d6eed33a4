"""The notebooks' widget apps: one shared layer (:mod:`.base`) and one module per family of figures."""
from .base import App, Snapshot, show_figure
from .classroom import ClassroomApp
from .layerwise import AdaptiveApp, ExplorerApp, RateApp, ScoreApp, SingleLayerApp, ThresholdApp

__all__ = ["AdaptiveApp", "App", "ClassroomApp", "ExplorerApp", "RateApp", "ScoreApp", "SingleLayerApp", "Snapshot",
           "ThresholdApp", "show_figure"]
