"""A scripted stand-in for ``medai segment`` used only where the real engine cannot serve a test:
a run that must last long enough to be cancelled, and a run that fails. Same argument and
JSON-lines protocol as the real command. It starts a child process (like the PythonSlicer
launcher does) so tests can check that Cancel kills the whole process tree.

Usage: python fake_engine.py segment INPUT... -o OUT --model ID --progress json [...]
Any engine subcommand is accepted in "slow" and "fail" modes (unknown options are ignored), so the
modules' other actions (classify, synthesize, register, fuse) can be driven against it too.
Environment: FAKE_MODE=ok|slow|fail, FAKE_SECONDS (how long "slow" works; default 120),
FAKE_PIDFILE=path (child pid written there),
FAKE_STARTED=path (written as soon as the engine starts), FAKE_CATALOGUE=path (the test catalogue).
"ok" writes a two-label .seg.nrrd on the input's grid (intensity above the median, split at the
middle column) with the engine's own writer and, as the real engine does, the label table of the
model's catalogue entry (names, colours, terminology), so the Slicer side's import is exercised
with a fast, deterministic result.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def emit(**fields):
    print(json.dumps(fields), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output")  # classify has none
    p.add_argument("--model")
    p.add_argument("--progress")
    p.add_argument("--device")
    p.add_argument("--fast", action="store_true")
    p.add_argument("--structures")
    a, _ = p.parse_known_args()
    if os.environ.get("FAKE_STARTED"):
        with open(os.environ["FAKE_STARTED"], "w") as f:
            f.write(str(os.getpid()))
    mode = os.environ.get("FAKE_MODE", "slow")
    if mode == "fail":
        emit(event="progress", fraction=0.1, message="loading", eta_s=None)
        emit(event="error", message="the model could not be loaded", hint="re-download it")
        print("medai: error: the model could not be loaded", file=sys.stderr, flush=True)
        return 2
    if mode == "ok":
        import numpy as np

        from MedAILib.io import read_image, write_segmentation
        from MedAILib.core.volume import LabelInfo

        vol = read_image(a.inputs[0])
        emit(event="progress", fraction=0.5, message="inference", eta_s=1.0)
        fg = vol.array > np.median(vol.array)
        lab = np.zeros(vol.array.shape, np.uint8)
        half = vol.array.shape[2] // 2
        lab[:, :, :half][fg[:, :, :half]] = 1
        lab[:, :, half:][fg[:, :, half:]] = 2
        labels = [LabelInfo(1, "one", (1, 0, 0)), LabelInfo(2, "two", (0, 1, 0))]
        if os.environ.get("FAKE_CATALOGUE"):  # the engine applies the catalogue's label table, once
            with open(os.environ["FAKE_CATALOGUE"]) as f:
                entry = next(m for m in json.load(f)["models"] if m["id"] == a.model)
            labels = [LabelInfo.from_dict(d) for d in entry["labels"]]
        write_segmentation(vol.with_array(lab, labels=labels), a.output)
        emit(event="case_done", input=a.inputs[0], output=a.output)
        emit(event="done", outputs=[a.output], failed=[])
        return 0
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    if os.environ.get("FAKE_PIDFILE"):
        with open(os.environ["FAKE_PIDFILE"], "w") as f:
            f.write(str(child.pid))
    steps = int(10 * float(os.environ.get("FAKE_SECONDS", "120")))
    for i in range(steps):
        emit(event="progress", fraction=i / steps, message="working", eta_s=(steps - i) / 10)
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
