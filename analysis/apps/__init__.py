"""The notebooks' widget apps: one shared layer (:mod:`.base`) and one module per family of figures."""
from .base import App, Snapshot, show_figure
from .classroom import ClassroomApp
from .defenses import DefenseApp
from .gallery import AttackGalleryApp, ModelCurvesApp
from .layerwise import AdaptiveApp, ExplorerApp, ModelApp, RateApp, ScoreApp, SingleLayerApp, ThresholdApp
from .pca import PCAApp
from .runtime import RuntimeApp
from .stability import StabilityApp

__all__ = ["AdaptiveApp", "App", "AttackGalleryApp", "ClassroomApp", "DefenseApp", "ExplorerApp", "ModelApp",
           "ModelCurvesApp", "PCAApp", "RateApp", "RuntimeApp", "ScoreApp", "SingleLayerApp", "Snapshot", "StabilityApp", "ThresholdApp",
           "show_figure"]
