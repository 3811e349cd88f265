"""First-use installation of the engine's Python packages, in a process of its own.

Started by ``MedAISlicerLib.dependencies`` (``PythonSlicer -m MedAISlicerLib.install_packages ...``)
so Slicer's GUI stays live: one pip call per package, each announced as a JSON ``progress`` event
(fraction, time left from the steps done so far), pip's own output as log lines, an ``error``
event naming the package when one fails. Cancel kills this process and its pip child.

torch is installed as Slicer's PyTorch extension does it: with light-the-torch, which picks the
CUDA or CPU build that fits the computer. No ``slicer`` import here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from MedAILib.core import events


def steps(requirements, torch=None, pip=None) -> list:
    """[(what, command)] in install order."""
    pip = list(pip) if pip else [sys.executable, "-m", "pip", "install"]
    out = []
    if torch:
        out += [("light-the-torch", pip + ["light-the-torch"]),
                (f"torch{torch}", [sys.executable, "-m", "light_the_torch", "install", f"torch{torch}"])]
    return out + [(req, pip + [req]) for req in requirements]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="install the MedAI engine's packages (JSON progress on stdout)")
    p.add_argument("requirements", nargs="*", help="pinned pip requirements, e.g. monai==1.6.1")
    p.add_argument("--torch", help="torch version requirement (installed with light-the-torch), e.g. '>=2.2'")
    p.add_argument("--pip", help="install command as a JSON list (default: this Python's pip install)")
    args = p.parse_args(argv)
    todo = steps(args.requirements, args.torch, json.loads(args.pip) if args.pip else None)
    t0 = time.monotonic()
    for i, (what, command) in enumerate(todo):
        eta = (time.monotonic() - t0) / i * (len(todo) - i) if i else None
        events.emit(events.PROGRESS, fraction=i / len(todo), message=f"installing {what} ({i + 1} of {len(todo)})",
                    eta_s=eta)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, encoding="utf-8", errors="replace")
        for line in proc.stdout:
            events.emit(events.LOG, message=line.rstrip())
        if proc.wait() != 0:
            events.emit(events.ERROR, message=f"installing {what} failed (pip exit code {proc.returncode})",
                        hint="check the internet connection (or proxy settings) and try again; pip's messages "
                             "are in the log")
            return 2
    events.emit(events.PROGRESS, fraction=1.0, message="packages installed", eta_s=0)
    events.emit(events.DONE, status=events.COMPLETE, outputs=[], failed=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
