"""Every widget app is importable from ``analysis.apps``, under one name: the class its module defines."""
import importlib
import inspect
import pkgutil


def test_every_app_class_is_in_the_packages_all():
    import analysis.apps as apps
    from analysis.apps.base import App

    defined = {}
    for info in pkgutil.iter_modules(apps.__path__):
        module = importlib.import_module(f"analysis.apps.{info.name}")
        defined |= {name: obj for name, obj in vars(module).items()
                    if inspect.isclass(obj) and issubclass(obj, App) and obj.__module__ == module.__name__
                    and not name.startswith("_")}
    missing = sorted(set(defined) - set(apps.__all__))
    assert not missing, f"analysis.apps.__all__ lacks {missing}"
    assert all(getattr(apps, name) is cls for name, cls in defined.items())
    assert {"DefenseApp", "PCAApp", "AttackGalleryApp"} <= set(defined)  # the search reaches every module
