"""``medai segment|classify|synthesize INPUTS -o OUT --cluster SPEC``: the cases of a batch on a Dask
cluster (issue 18).

``SPEC`` is ``local:N`` (a Dask ``LocalCluster`` of N worker processes on this computer) or the
address of a running Dask scheduler (``tcp://HOST:PORT``; e.g. a SLURM or PBS cluster started with
dask-jobqueue, see docs/cluster.md). Inputs and outputs must be on storage every worker sees.

Everything about the batch stays here and is decided by the same batch runner as a local run
(:mod:`MedAILib.cli.batch`): the cases, output names, overwrite/``--resume`` rules, the report, the
events and the exit status. Each case runs on a worker as a one-case command line of the same
command, through the one-shot CLI's own entry point (as the warm engine, ``medai serve``, runs its
jobs), so it computes exactly what ``medai`` computes on one computer and writes its outputs with
the same atomic writer (a killed worker leaves no partial file under a final name). Dask does the
rest:

- a worker keeps its model loaded between cases (:class:`MedAIWorker` installs the warm engine's
  bundle cache, :mod:`MedAILib.server.bundles`, in every worker process);
- a worker that dies mid-case (killed, out of memory, node lost) has its cases re-run on another
  worker by the scheduler (up to ``distributed.scheduler.allowed-failures`` times, 3 by default);
  a case is reported once, when its future completes, so none is lost and none counted twice;
- the report is rewritten as each case finishes; progress says cases done / total and time left.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

from MedAILib.core import events
from MedAILib.core.errors import Cancelled, InputError, MedAIError

CLUSTER_COMMANDS = ("segment", "classify", "synthesize")
_LOCAL = re.compile(r"local(?::(\d+))?$")
# Options that concern only this computer's side of the batch (never passed to a case's command).
LOCAL_ONLY = {"inputs", "output", "preview", "explain", "report", "overwrite", "resume", "progress", "server",
              "token_file", "func", "command", "debug", "cluster"}
FREE_TEXT = {"device", "structures", "roi", "explain_layer", "format", "mirror"}


def add_cluster_arguments(subparsers) -> None:
    """``--cluster`` on the commands that run cases of a batch."""
    for name in CLUSTER_COMMANDS:
        p = subparsers.choices.get(name)
        if p is None:
            continue
        g = p.add_argument_group("run the cases on a Dask cluster")
        g.add_argument("--cluster", metavar="SPEC", type=cluster_spec,
                       help="local:N (N worker processes here) or tcp://HOST:PORT (a running Dask scheduler, e.g. "
                            "SLURM/PBS via dask-jobqueue; docs/cluster.md); inputs and outputs on shared storage")


def cluster_spec(text: str) -> str:
    """argparse type: ``local``, ``local:N`` or a scheduler address."""
    text = text.strip()
    m = _LOCAL.fullmatch(text)
    if m:
        if m.group(1) is not None and int(m.group(1)) < 1:
            raise argparse.ArgumentTypeError("local:N needs at least one worker")
        return text
    if re.fullmatch(r"(tcp|tls|ws|wss|inproc|ucx)://\S+", text):
        return text
    raise argparse.ArgumentTypeError(f"unknown cluster {text!r}: give local:N or a scheduler address tcp://HOST:PORT")


# --- worker side ---------------------------------------------------------------------------------------

def _worker_plugin_class():
    from distributed import WorkerPlugin

    class MedAIWorker(WorkerPlugin):
        """Per worker process: the warm engine's bundle cache (models stay loaded between cases),
        torch threads, and per-thread capture of what a case prints."""

        name = "medai"

        def __init__(self, threads: int = 0):
            self.threads = int(threads)

        def setup(self, worker):
            import sys

            import MedAILib.models.bundle as bundle_mod
            from MedAILib.server.bundles import BundleCache
            from MedAILib.server.capture import ThreadRouter

            if bundle_mod.bundle_cache is None:
                bundle_mod.bundle_cache = BundleCache(max_models=2)
            if self.threads > 0:
                os.environ["OMP_NUM_THREADS"] = str(self.threads)
                import torch

                torch.set_num_threads(self.threads)
            if not isinstance(sys.stdout, ThreadRouter):
                self._streams = (sys.stdout, sys.stderr)
                sys.stdout, sys.stderr = ThreadRouter(sys.stdout), ThreadRouter(sys.stderr)

        def teardown(self, worker):
            import sys

            streams = getattr(self, "_streams", None)
            if streams is not None:
                sys.stdout, sys.stderr = streams

    return MedAIWorker


def run_case_on_worker(argv: list) -> dict:
    """Run one case's command line (``--progress json``) here; its events, exit status and where."""
    import sys

    from MedAILib.server.capture import LineSink, ThreadRouter

    lines: list = []
    worker = None
    try:
        from distributed import get_worker

        worker = get_worker().address
    except Exception:  # noqa: BLE001 - run outside a worker (tests): no address
        pass
    t0 = time.monotonic()
    sink = LineSink(lines.append)
    router = sys.stdout if isinstance(sys.stdout, ThreadRouter) else None
    from MedAILib.cli import main

    try:
        if router is not None:
            with router.route(sink), sys.stderr.route(sink):
                rc = main(list(argv))
        else:
            rc = main(list(argv))
    except SystemExit as e:  # argparse
        rc = e.code if isinstance(e.code, int) else 2
    parsed = [e for e in (events.parse_line(l) for l in lines) if e is not None]
    return {"returncode": int(rc or 0), "events": parsed, "worker": worker, "pid": os.getpid(),
            "seconds": round(time.monotonic() - t0, 3),
            "text": [l for l in lines if events.parse_line(l) is None][-20:]}


# --- this computer's side ----------------------------------------------------------------------------

def _absolute(value: str) -> str:
    """A file or folder named on this computer, as every worker must see it (absolute)."""
    p = Path(value).expanduser()
    return str(p.resolve()) if p.exists() else value


def case_options(command: str, args) -> list:
    """The options every case's command line carries: each option that changes the result, as given
    here, paths made absolute (workers may start in another folder)."""
    from MedAILib.client.command import replay_options

    return replay_options(command, args, LOCAL_ONLY, FREE_TEXT, lambda option, value: _absolute(value))


def case_argv(command: str, case, options: list) -> list:
    """``medai COMMAND INPUTS --output OUT ... --progress json --overwrite`` for one case. --overwrite:
    the batch runner here already refused existing outputs (or skipped them with --resume); a case
    re-run after its worker died may find its own finished output, which it must replace."""
    from MedAILib.client.command import ROLE_OPTIONS

    roles = ROLE_OPTIONS[command]
    argv = [command, *[str(Path(p).resolve()) for p in case.inputs]]
    for role, target in case.outputs.items():
        if role not in roles:
            raise InputError(f"output {role} cannot be written by a cluster worker", "run without --cluster")
        argv += [roles[role], str(Path(target).resolve())]
    return argv + options + ["--progress", "json", "--overwrite"]


def connect(spec: str, n_cases: int):
    """(client, cluster or None) for ``spec``; a local cluster is closed with the client."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - a dependency of MedAI
        raise InputError("--cluster needs Dask (pip install dask distributed)", "install them, or run without "
                                                                               "--cluster") from e
    import logging

    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # Dask's INFO chatter is not for people (--debug shows it)
        for name in ("distributed", "dask"):
            logging.getLogger(name).setLevel(logging.WARNING)
    m = _LOCAL.fullmatch(spec)
    if m:
        n = int(m.group(1) or os.cpu_count() or 1)
        threads = max(1, (os.cpu_count() or 1) // n)
        try:  # an OMP_NUM_THREADS set by the user caps each worker's torch threads (shared machines)
            threads = max(1, min(threads, int(os.environ.get("OMP_NUM_THREADS", ""))))
        except ValueError:
            pass
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               env={"OMP_NUM_THREADS": str(threads)}, silence_logs=logging.WARNING)
        return Client(cluster), cluster, threads
    try:
        client = Client(spec, timeout="30s")
    except (OSError, TimeoutError) as e:
        raise InputError(f"cannot reach the Dask scheduler at {spec}: {e}",
                         "start it first (docs/cluster.md), check the address and port, or use --cluster local:N") from e
    return client, None, 0


def _row_from(result: dict, case) -> dict:
    """The report fields of a case from its worker's events (as client/command.py does for a server)."""
    evs = result["events"]
    done = next((e for e in evs if e.get("event") == events.CASE_DONE), None)
    error = next((e for e in evs if e.get("event") == events.ERROR), None)
    if done is None:  # the command stopped before the case: a usage or model error
        from MedAILib.cli.batch import StopBatch

        msg = (error or {}).get("message") or f"the case's command ended with exit status {result['returncode']}" \
            + (f": {result['text'][-1]}" if result["text"] else "")
        raise StopBatch(MedAIError(msg, (error or {}).get("hint", "")))
    if done.get("status") == events.FAILED:
        raise MedAIError(done.get("error") or "failed on a cluster worker", done.get("hint") or "")
    row = {k: v for k, v in done.items() if k not in
           ("event", "case", "index", "total", "status", "error", "hint", "output", "outputs", "inputs")}
    row["worker"], row["worker_pid"] = result.get("worker"), result.get("pid")  # a restarted worker: new pid
    row["seconds"] = result.get("seconds")
    return row


def _left(done: int, total: int, t0: float) -> str:
    if not done or done >= total:
        return ""
    s = (time.monotonic() - t0) / done * (total - done)
    return f", about {s / 60:.0f} min left" if s >= 90 else f", about {s:.0f} s left"


def process_on_cluster(batch) -> int:
    """:meth:`MedAILib.cli.batch.Batch.process` with the cases on ``batch.args.cluster``."""
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    from MedAILib.cli.batch import StopBatch

    if getattr(batch.args, "server", None):
        raise InputError("--cluster and --server cannot be combined", "choose one place to run the cases")
    command = batch.command
    if command not in CLUSTER_COMMANDS:
        raise InputError(f"medai {command} cannot run on a cluster", "run it without --cluster")
    options = case_options(command, batch.args)
    todo = [c for c in batch.cases if not c.skipped]
    total = len(batch.cases)
    for case in batch.cases:  # --resume: cases already done are reported at once, as a local run does
        if case.skipped:
            row = batch.rows[case.name]
            written = [str(p) for p in case.outputs.values()]
            row.update(status=events.SKIPPED, error=None, output=written[0] if written else None, outputs=written,
                       reason="complete outputs already existed (--resume)")
            batch._case_done(case, row)
    if not todo:
        return batch._end()
    client, cluster, threads = connect(batch.args.cluster, len(todo))
    futures = {}
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        client.register_plugin(_worker_plugin_class()(threads))
        batch._print(f"medai: {command}: {len(todo)} case(s) on {batch.args.cluster} ({workers} worker(s) now)",
                     always=True)
        token = os.urandom(4).hex()
        for case in todo:
            argv = case_argv(command, case, options)
            if batch.json:
                events.emit(events.CASE_START, case=case.name, index=case.index + 1, total=total,
                            inputs=batch.rows[case.name]["inputs"], cluster=batch.args.cluster)
            fut = client.submit(run_case_on_worker, argv, key=f"medai-{command}-{case.index}-{token}", pure=False)
            futures[fut] = case
        t0, done = time.monotonic(), total - len(todo)
        for fut in as_completed(list(futures)):
            batch.token.check()
            case = futures[fut]
            row = batch.rows[case.name]
            try:
                result = fut.result()
                row.update(_row_from(result, case))
                written = [str(p) for p in case.outputs.values() if p.is_file()]
                row.update(status=events.OK, error=None)
                if not row.get("output"):  # the batch's row starts with output None
                    row["output"] = written[0] if written else None
                row["outputs"] = written
            except StopBatch:
                row.update(status=events.NOT_RUN, error="the command could not run on the cluster")
                raise
            except MedAIError as e:
                row.update(status=events.FAILED, error=e.message, hint=e.hint, output=None, outputs=[])
            except FutureCancelledError:
                raise Cancelled("the cluster cancelled the case") from None
            except Exception as e:  # noqa: BLE001 - e.g. KilledWorker: its worker died on every attempt
                row.update(status=events.FAILED, hint="", output=None, outputs=[],
                           error=f"{type(e).__name__}: {e}" if "KilledWorker" not in type(e).__name__ else
                           "the worker running this case died on every attempt (out of memory? killed?)")
            done += 1
            batch._ran += 1
            batch._case_done(case, row)
            left = _left(done - (total - len(todo)), len(todo), t0)
            batch.progress.update(done / total, f"{done}/{total} cases done{left}")
            batch._print(f"medai: {command}: {done}/{total} cases done{left}")
        return batch._end()
    finally:
        for fut in futures:
            if not fut.done():
                fut.cancel()
        client.close()
        if cluster is not None:
            import logging

            # Workers that take a few seconds to exit after torch/MONAI are killed by their nanny, which
            # says so at WARNING: harmless here (every case has ended), so not shown.
            logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
            cluster.close()
