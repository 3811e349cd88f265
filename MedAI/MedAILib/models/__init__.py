"""Models as MONAI bundles: catalogue, trust, verified downloads/cache and bundle loading.

Layout follows MONAI's own ``monai/bundle``: :mod:`.catalogue` (what models exist),
:mod:`.cache` + :mod:`.download` (where their files live and how they get there), :mod:`.trust`
(which bundles may execute their config) and :mod:`.bundle` (load one and expose its parts).
"""

from MedAILib.models.cache import medai_home  # noqa: F401
from MedAILib.models.catalogue import Catalogue, CatalogueEntry, load_catalogue  # noqa: F401

# .bundle imports torch (seconds); load it only when used so that `medai info`, `medai models list`
# and every CLI start-up stay fast.
_LAZY = {"Bundle", "load_bundle", "resolve_model"}


def __getattr__(name):
    if name in _LAZY:
        from MedAILib.models import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
