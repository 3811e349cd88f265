"""The life cycle of one engine run seen from Slicer: nodes -> temporary files -> ``medai <subcommand>``
outside Slicer's process (the warm engine, a one-shot process or a server: :mod:`.engine_client`)
-> nodes. Shared by the MedAI, MedAISegment and MedAIFusion
logics: a subclass writes its inputs (``_arguments``) and loads its results (``_import``).
``_arguments`` may also return ``(args, prepare)``: ``prepare`` then runs in a worker thread before
the engine starts (used to write large inputs off the GUI thread). Nodes a subclass makes while
importing (``_newOutput``) are removed again when the import fails, so no half-filled node is left.

MRML is touched on the caller's thread only (inside ``poll()``/``wait()``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable, Optional

import slicer

from . import engine_client, nodes
from .process import EngineJob, engine_environment


class EngineRun:
    """Common life cycle: ``start()`` -> ``poll()``/``wait()`` -> ``status`` "done"/"failed"/"cancelled"."""

    subcommand = ""
    tempKey = "MedAI"
    runName = ""  # word for the log line at the end ("Segmentation done."); the subcommand when empty

    def __init__(self, progressCallback: Optional[Callable] = None, logCallback: Optional[Callable] = None,
                 completedCallback: Optional[Callable] = None, enginePrefix=None):
        self.progressCallback, self.logCallback, self.completedCallback = progressCallback, logCallback, completedCallback
        self.enginePrefix = enginePrefix
        self.status = "created"
        self.errorText = ""
        self.tempDir = None
        self.process: Optional[EngineJob] = None
        self._createdOutputs: list = []  # attribute names of nodes made by _import (see _newOutput)

    def _arguments(self):  # write inputs into self.tempDir, return the engine arguments (or (args, prepare))
        raise NotImplementedError

    def _import(self, result) -> None:  # create/fill nodes from the files in self.tempDir
        raise NotImplementedError

    def _inputFiles(self, volumes: dict):
        """``{stem: Volume}`` (views from ``nodes.volume_view_from_node``, taken on the caller's thread)
        -> (``{stem: path in self.tempDir}``, ``prepare`` that writes them on the worker thread).
        Writing a CT takes 0.3-1.7 s; only this part leaves Slicer's main thread (no MRML in it)."""
        folder = self.tempDir
        paths = {stem: Path(folder) / f"{stem}.nrrd" for stem in volumes}

        def write_inputs():
            for stem, volume in volumes.items():
                nodes.write_volume(volume, folder, stem)

        return paths, write_inputs

    def start(self) -> "EngineRun":
        self.tempDir = slicer.util.tempDirectory(self.tempKey)
        try:
            args, prepare = self._arguments(), None
            if isinstance(args, tuple):
                args, prepare = args
            env = engine_environment(slicer.util.startupEnvironment())
            # The warm engine, a one-shot process or a server (engine_client.settings): same events, same files.
            self.process = engine_client.make_job(self.subcommand, args, env, self.tempDir, self.enginePrefix,
                                                  on_progress=self._onProgress, on_log=self._log,
                                                  on_event=self._onEvent, on_finished=self._onFinished,
                                                  cleanup_dirs=[self.tempDir], prepare=prepare)
            self._log("Running: " + " ".join(self.process.command))
            self.process.start()
        except Exception:
            shutil.rmtree(self.tempDir, ignore_errors=True)
            raise
        self.status = "running"
        return self

    def poll(self) -> bool:
        return self.process is not None and self.process.poll()

    def wait(self, timeout=None) -> "EngineRun":
        self.process.wait(timeout=timeout)
        return self

    def startAndMaybeWait(self, wait: bool, timeout=None) -> "EngineRun":
        """What the Logic methods do with ``wait``: start, and when waiting, block until the end and
        raise RuntimeError("<run name> failed|cancelled: <error>") unless it is done."""
        self.start()
        if wait:
            self.wait(timeout=timeout)
            if self.status != "done":
                raise RuntimeError(f"{self.runName or self.subcommand} {self.status}: {self.errorText}")
        return self

    def cancel(self) -> None:
        if self.process is not None:
            self.process.cancel()

    @property
    def running(self) -> bool:
        return self.status == "running"

    def _log(self, text):
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    def _onProgress(self, fraction, message, eta_s):
        if self.progressCallback:
            self.progressCallback(fraction, message, eta_s)

    def _onEvent(self, event) -> None:  # every JSON event of the engine (override to read results)
        pass

    def _failureText(self, result) -> str:  # what a failed run says (override to prefer an engine event)
        return result.error_text()

    def _newOutput(self, attribute: str, node):
        """Set output node ``attribute`` to a node made by ``_import``: removed again if the import fails."""
        setattr(self, attribute, node)
        self._createdOutputs.append(attribute)
        return node

    def _removeCreatedOutputs(self) -> None:
        for attribute in self._createdOutputs:
            node = getattr(self, attribute, None)
            if node is not None:
                slicer.mrmlScene.RemoveNode(node)
                setattr(self, attribute, None)
        self._createdOutputs = []

    def _onFinished(self, result):
        try:
            if result.cancelled:
                self.status, self.errorText = "cancelled", "Cancelled."
            elif not result.ok:
                self.status, self.errorText = "failed", self._failureText(result)
            else:
                self._import(result)
                self.status = "done"
        except Exception as e:  # a failed import must not leave a half-filled new node
            logging.exception("importing the result failed")
            self._removeCreatedOutputs()
            self.status, self.errorText = "failed", f"Could not load the result: {e}"
        self._log(f"{self.runName or self.subcommand} {self.status}." + (f" {self.errorText}" if self.status == "failed" else ""))
        if self.completedCallback:
            self.completedCallback(self)
