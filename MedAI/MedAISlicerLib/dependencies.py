"""First-use installation of what the engine needs in Slicer's Python, without blocking Slicer.

torch is installed as Slicer's PyTorch extension does it (light-the-torch picks the CUDA or CPU
build that fits); the other packages are pinned to the versions the engine is tested with
(pyproject.toml; a test keeps the two lists equal). Slicer already bundles numpy and SimpleITK,
which are never replaced. Nothing here runs at import time.

Every module's action goes through :func:`start_after_dependencies`: when a package is missing,
the install runs in a process of its own through the same background runner as the engine
(``MedAISlicerLib.process``: progress, time left, Cancel), and the action starts when it is done.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Callable, Optional

import slicer

from MedAISlicerLib import process

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


def torch_missing() -> bool:
    return importlib.util.find_spec("torch") is None


def install_command(requirements, torch: bool, pip: Optional[list] = None) -> list:
    """The installer process: ``PythonSlicer -m MedAISlicerLib.install_packages [--torch REQ] REQ...``."""
    import json

    command = [process.python_executable(), "-m", "MedAISlicerLib.install_packages", *requirements]
    if torch:
        command += ["--torch", TORCH_REQUIREMENT]
    if pip:
        command += ["--pip", json.dumps(list(pip))]
    return command


class FirstUseRun:
    """Install the missing packages in the background, then start the action's own run.

    Driven like an engine run: ``poll()`` (the widget's timer), ``cancel()``, ``running``,
    ``status`` ("running", then the action run's own, or "failed"/"cancelled" when the install
    did not finish) and ``errorText``. Progress and log lines of the install go to the same
    callbacks as the action's; ``completedCallback`` gets this object when the install fails or
    is cancelled, else the action's run when that ends.
    """

    def __init__(self, startRun: Callable, requirements: list, torch: bool, progressCallback=None,
                 logCallback=None, completedCallback=None, pip: Optional[list] = None):
        self.startRun = startRun
        self.progressCallback, self.logCallback, self.completedCallback = progressCallback, logCallback, completedCallback
        self.command = install_command(requirements, torch, pip)
        self.run = None  # the action's run, once started
        self.status, self.errorText = "created", ""
        self.install: Optional[process.EngineProcess] = None

    def start(self) -> "FirstUseRun":
        env = process.engine_environment(slicer.util.startupEnvironment())
        self.install = process.EngineProcess(self.command, env=env, on_progress=self._progress, on_log=self._log,
                                             on_finished=self._installed)
        self._log("Installing what the MedAI engine needs (first use): " + " ".join(self.command[3:]))
        self.install.start()
        self.status = "running"
        return self

    def _progress(self, fraction, message, eta_s):
        if self.progressCallback:
            self.progressCallback(fraction, message, eta_s)

    def _log(self, text):
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    def _end(self, status, text):
        self.status, self.errorText = status, text
        self._log(f"Installation {status}. {text}")
        if self.completedCallback:
            self.completedCallback(self)

    def _installed(self, result) -> None:  # on the caller's thread (inside poll)
        if result.cancelled:
            return self._end("cancelled", "Cancelled: nothing was run.")
        if not result.ok:
            return self._end("failed", result.error_text())
        importlib.invalidate_caches()  # let find_spec see what pip just added
        still = missing_packages() + (["torch"] if torch_missing() else [])
        if still:
            return self._end("failed", f"{', '.join(still)} could not be installed. Restart Slicer and try again.")
        try:
            self.run = self.startRun()
        except Exception as e:  # the action refused to start (e.g. an input changed meanwhile)
            return self._end("failed", str(e))

    def poll(self) -> bool:
        if self.run is not None:
            return self.run.poll()
        if self.install is None:
            return False
        going = self.install.poll()
        return going or (self.run is not None and self.run.running)

    def wait(self, timeout=None) -> "FirstUseRun":
        self.install.wait(timeout=timeout)
        if self.run is not None:
            self.run.wait(timeout=timeout)
        return self

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()
        elif self.install is not None:
            self.install.cancel()

    @property
    def running(self) -> bool:
        if self.run is not None:
            return self.run.running
        return self.status == "running"

    def __getattr__(self, name):  # the action run's results (outputSegmentation, ...) once it exists
        run = self.__dict__.get("run")
        if run is None:
            raise AttributeError(name)
        return getattr(run, name)


def start_after_dependencies(startRun: Callable, confirm: bool = True, progressCallback=None, logCallback=None,
                             completedCallback=None, pip: Optional[list] = None):
    """Start an action: ``startRun()`` (which returns its running run) at once when the engine's
    packages are installed; otherwise ask (``confirm``), install them in the background and start
    the action afterwards. Returns the run to drive; raises DependencyError when declined."""
    missing, torch = missing_packages(), torch_missing()
    if not missing and not torch:
        return startRun()
    shown = missing + ([f"torch{TORCH_REQUIREMENT} (CUDA or CPU build, as the PyTorch extension picks)"] if torch else [])
    if confirm and not slicer.util.confirmOkCancelDisplay(
            "MedAI needs these Python packages, which will be downloaded and installed now in the background "
            "(this can take a few minutes; Cancel stops it):\n" + "\n".join(shown)):
        raise DependencyError("Installation of the required Python packages was cancelled.")
    return FirstUseRun(startRun, missing, torch, progressCallback, logCallback, completedCallback, pip).start()
