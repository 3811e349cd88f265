"""First-use installation of what the engine needs in Slicer's Python.

torch comes from the PyTorch extension (PyTorchUtils picks a CUDA/CPU build that fits the driver);
the other packages are pinned to the versions the engine is tested with (pyproject.toml; a test
keeps the two lists equal). Slicer already bundles numpy and SimpleITK, which are never replaced.
Nothing here runs at import time: the Widget calls ``ensure()`` when the user presses Segment.
"""

from __future__ import annotations

import importlib
import importlib.util

import slicer

TORCH_REQUIREMENT = ">=2.2"
# import name -> pinned pip requirement (same pins as pyproject.toml)
PINNED = {
    "monai": "monai==1.6.1",
    "nibabel": "nibabel==5.4.2",
    "nrrd": "pynrrd==1.1.3",
    "slicerio": "slicerio==1.4.0",
    "pydicom": "pydicom==3.0.2",
    "highdicom": "highdicom==0.28.2",
    "tqdm": "tqdm==4.70.1",
    "scipy": "scipy==1.17.1",
    "jsonschema": "jsonschema==4.26.0",
    "yaml": "PyYAML==6.0.3",
    "skimage": "scikit-image==0.26.0",
}


class DependencyError(RuntimeError):
    """A dependency is missing and could not (or may not) be installed."""


def missing_packages() -> list:
    return [req for name, req in PINNED.items() if importlib.util.find_spec(name) is None]


def ensure(confirm: bool = True) -> None:
    """Install torch (via the PyTorch extension) and missing pinned packages; raise DependencyError
    with a clear message when that is impossible or declined."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError as e:
        raise DependencyError("The PyTorch extension is not installed. Install 'PyTorch' from the "
                              "Extensions Manager, restart Slicer and try again.") from e
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        torch = torchLogic.installTorch(askConfirmation=confirm, torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise DependencyError("PyTorch is needed to run AI models and was not installed. Press "
                                  "Segment again to install it, or install it from the PyTorch Utils module.")
    missing = missing_packages()
    if not missing:
        return
    if confirm and not slicer.util.confirmOkCancelDisplay(
            "MedAI needs these Python packages, which will be downloaded and installed now "
            "(this can take a few minutes):\n" + "\n".join(missing)):
        raise DependencyError("Installation of the required Python packages was cancelled.")
    try:
        slicer.util.pip_install(" ".join(missing))
    except Exception as e:
        raise DependencyError(f"Installing {', '.join(missing)} failed: {e}. Check the internet connection "
                              "(or proxy settings) and try again; details are in the Python console.") from e
    importlib.invalidate_caches()  # let find_spec see what pip just added
    still = missing_packages()
    if still:
        raise DependencyError(f"{', '.join(still)} could not be installed. Restart Slicer and try again.")
