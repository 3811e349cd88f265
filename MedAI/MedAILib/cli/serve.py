"""``medai serve``: the warm engine. torch, MONAI and recently used models stay loaded, so a job
costs its work, not the start-up (docs/server.md).

- ``medai serve --parent-pid PID``: the local engine the Slicer modules start on first use; jobs
  and events as JSON lines on stdin/stdout (:mod:`MedAILib.server.stdio`).
- ``medai serve --host H --port P --token-file F``: a server for several computers over HTTP
  (:mod:`MedAILib.server.http`); put TLS in front of it with a reverse proxy.

Either way a job is a ``medai segment|classify|synthesize`` command line, run by the same code as
the one-shot command, one job at a time per device.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path

from MedAILib.core.errors import InputError


def register(sub) -> None:
    p = sub.add_parser("serve", help="keep the engine warm: a local engine for Slicer, or an HTTP server "
                                     "for several computers (--port)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP: address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP: port to listen on (0 = any free port); without it the "
                                            "engine talks JSON lines on stdin/stdout")
    p.add_argument("--token-file", help="HTTP: file holding the accepted token(s), one per line (required)")
    p.add_argument("--parent-pid", type=int, help="exit when this process ends (the Slicer that started it)")
    p.add_argument("--idle-release-s", type=float, default=60.0,
                   help="after this many idle seconds move models off the GPU and return its memory "
                        "(default 60; negative: never)")
    p.add_argument("--max-models", type=int, default=4, help="models kept loaded (default 4)")
    p.add_argument("--model-cache-mb", type=float,
                   help="memory the loaded models' weights may use (default: a quarter of RAM, at most 8 GiB)")
    p.add_argument("--max-upload-mb", type=float, default=2048, help="HTTP: largest input file (default 2048)")
    p.add_argument("--max-queue", type=int, default=100, help="HTTP: jobs waiting or running, all clients (default 100)")
    p.add_argument("--max-jobs-per-client", type=int, default=20, help="HTTP: jobs per client (default 20)")
    p.add_argument("--keep-results-s", type=float, default=600.0,
                   help="HTTP: results not fetched and deleted by the client are deleted this long after "
                        "the job (default 600)")
    p.add_argument("--keep-data", action="store_true",
                   help="HTTP: keep every job's inputs and results in --work-dir (default: deleted)")
    p.add_argument("--work-dir", help="HTTP: folder for job files (default: a private temporary folder)")
    p.add_argument("--ssl-certfile", help="HTTP: serve TLS directly (a reverse proxy is the usual way)")
    p.add_argument("--ssl-keyfile", help="HTTP: the key of --ssl-certfile")
    p.add_argument("--no-warmup", action="store_true", help="do not import torch and MONAI before the first job")
    p.set_defaults(func=run)


def run(args) -> int:
    from MedAILib.server.bundles import BundleCache
    from MedAILib.server.capture import ThreadRouter
    from MedAILib.server.engine import Engine

    http = args.port is not None
    if http and not args.token_file:
        raise InputError("medai serve --port needs --token-file", "write a long random token into a file "
                         "readable only by you and give its path")
    proto = None
    if not http:
        from MedAILib.server.stdio import claim_stdout

        proto = claim_stdout()
    real_stderr = sys.stderr
    router = ThreadRouter(real_stderr)
    sys.stdout = sys.stderr = router
    for handler in logging.getLogger().handlers:  # job log records go to the job, like a one-shot's stderr
        if isinstance(handler, logging.StreamHandler) and handler.stream is real_stderr:
            handler.setStream(router)
    cache = BundleCache(None if args.model_cache_mb is None else int(args.model_cache_mb * 2**20), args.max_models)
    engine = Engine(router=router, cache=cache, idle_release_s=args.idle_release_s, max_jobs=args.max_queue)
    if not args.no_warmup:
        engine.warm.clear()
        threading.Thread(target=_warm_up, args=(engine,), name="medai-warmup", daemon=True).start()
    if http:
        return _serve_http(args, engine, real_stderr)
    from MedAILib.server.stdio import StdioChannel, serve_stdio

    if args.parent_pid:
        from MedAILib.server.parent import watch_parent

        watch_parent(args.parent_pid, lambda: _exit_now(engine))
    return serve_stdio(engine, StdioChannel(proto))


def _exit_now(engine) -> None:
    """The parent has gone: cancel what runs (atomic writers remove partial files) and leave."""
    engine.shutdown(timeout=5.0)
    os._exit(0)


def _warm_up(engine) -> None:
    """Import what every job needs before the first one arrives (jobs wait for it: MONAI cannot be
    imported from two threads at once)."""
    try:
        import torch  # noqa: F401
        import monai.transforms  # noqa: F401
        import monai.bundle  # noqa: F401

        import MedAILib.runtime.device  # noqa: F401
        import MedAILib.runtime.inferer  # noqa: F401
        import MedAILib.tasks.segmentation.pipeline  # noqa: F401
    except Exception as e:  # noqa: BLE001 - the first job will report the same problem
        logging.getLogger(__name__).debug("warm-up import failed: %s", e)
    finally:
        engine.warm.set()


def _serve_http(args, engine, log_stream) -> int:
    import shutil

    import uvicorn

    from MedAILib.server import protocol
    from MedAILib.server.http import Settings, create_app, read_tokens

    tokens = read_tokens(args.token_file)
    own_work_dir = args.work_dir is None
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="medai-serve-"))
    settings = Settings(tokens, work_dir, max_upload_bytes=int(args.max_upload_mb * 2**20), max_queue=args.max_queue,
                        max_jobs_per_client=args.max_jobs_per_client, keep_results_s=args.keep_results_s,
                        keep_data=args.keep_data)
    app = create_app(engine, settings)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        raise InputError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}",
                         "choose another --port, or stop the program using it") from e
    sock.listen(2048)  # before "ready": a client connecting at once waits in the backlog, is never refused
    port = sock.getsockname()[1]
    scheme = "https" if args.ssl_certfile else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host
    config = uvicorn.Config(app, log_level="warning", ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    if args.parent_pid:
        from MedAILib.server.parent import watch_parent

        watch_parent(args.parent_pid, lambda: setattr(server, "should_exit", True))
    # One machine-readable line (tests and scripts read the port from it), then uvicorn's own log.
    line = protocol.dumps(protocol.envelope("ready", url=f"{scheme}://{host}:{port}", version=protocol.engine_version(),
                                            protocol=protocol.PROTOCOL, pid=os.getpid()))
    sys.__stdout__.write(line + "\n")
    sys.__stdout__.flush()
    log_stream.write(f"medai: serving on {scheme}://{host}:{port} (work folder {work_dir}"
                     f"{', kept' if args.keep_data else ', job data deleted after each job'})\n")
    log_stream.flush()
    try:
        server.run(sockets=[sock])
    finally:
        engine.shutdown()
        if not args.keep_data:
            if own_work_dir:
                shutil.rmtree(work_dir, ignore_errors=True)
            else:
                for job in list(engine.jobs.values()):
                    if job.workdir is not None:
                        shutil.rmtree(job.workdir, ignore_errors=True)
    return 0
