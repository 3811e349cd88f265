#!/usr/bin/env python
"""Start a Dask cluster for ``medai ... --cluster tcp://HOST:PORT`` on a batch system (dask-jobqueue).

    # on the cluster's login node, in the environment MedAI is installed in:
    python Testing/tools/medai_dask_cluster.py slurm --jobs 8 --cores 4 --memory 16GB --walltime 04:00:00 \\
        --queue gpu --account myproject --job-extra=--gres=gpu:1 --address-file ~/medai-scheduler.txt
    # then, from any machine that reaches it (the login node itself, typically):
    medai segment /shared/cohort -o /shared/labels --cluster $(cat ~/medai-scheduler.txt) --report /shared/labels.csv

The scheduler runs in this process (keep it running, e.g. in ``tmux``; Ctrl-C stops the cluster and
cancels its jobs). Each batch job runs one Dask worker (one process, ``--cores`` threads for torch);
MedAI's worker plugin keeps the model loaded between cases. Inputs, outputs and the report must be
on storage every node sees (the paths are sent as they are given, made absolute).

Kinds: ``slurm``, ``pbs`` (``--queue``, ``--account``, ``--job-extra`` as the batch system wants),
and ``local``: the same jobqueue machinery with jobs started as local processes, to try the whole
chain on one computer (``--print-job-script`` shows what would be submitted, without submitting).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def make_cluster(args):
    # One Dask thread per job (one case at a time: its memory is the job's), --cores CPUs booked for
    # torch's threads inside the case.
    common = dict(cores=1, processes=1, memory=args.memory, python=args.python,
                  job_script_prologue=[f"export OMP_NUM_THREADS={args.cores}"],
                  scheduler_options={"port": args.port, "dashboard_address": None,
                                     **({"host": args.host} if args.host else {})})
    if args.kind == "slurm":
        from dask_jobqueue import SLURMCluster

        return SLURMCluster(queue=args.queue, account=args.account, walltime=args.walltime, job_cpu=args.cores,
                            job_extra_directives=args.job_extra, **common)
    if args.kind == "pbs":
        from dask_jobqueue import PBSCluster

        return PBSCluster(queue=args.queue, account=args.account, walltime=args.walltime,
                          resource_spec=f"select=1:ncpus={args.cores}:mem={args.memory}",
                          job_extra_directives=args.job_extra, **common)
    from dask_jobqueue.local import LocalCluster  # jobs as local processes: the same chain on one computer

    os.environ["OMP_NUM_THREADS"] = str(args.cores)  # local jobs are run without a shell: no prologue
    return LocalCluster(**{k: v for k, v in common.items() if k != "job_script_prologue"})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["slurm", "pbs", "local"])
    p.add_argument("--jobs", type=int, default=2, help="batch jobs = Dask workers (default 2)")
    p.add_argument("--cores", type=int, default=4, help="cores per job (torch threads)")
    p.add_argument("--memory", default="16GB", help="memory per job (a CT case with a Model Zoo bundle: ~2-4 GB)")
    p.add_argument("--walltime", default="04:00:00")
    p.add_argument("--queue", help="partition (SLURM) or queue (PBS)")
    p.add_argument("--account", help="project/account to charge")
    p.add_argument("--job-extra", action="append", default=[], help="extra #SBATCH/#PBS directive, repeatable")
    p.add_argument("--python", default=sys.executable, help="the Python of MedAI's environment on the nodes")
    p.add_argument("--host", help="interface/address the scheduler listens on (default: the login node's)")
    p.add_argument("--port", type=int, default=8786, help="scheduler port (0: any free port)")
    p.add_argument("--address-file", help="write the scheduler address here (for --cluster $(cat FILE))")
    p.add_argument("--print-job-script", action="store_true", help="print the job script and exit")
    args = p.parse_args(argv)
    cluster = make_cluster(args)
    try:
        if args.print_job_script:
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
        address = cluster.scheduler_address
        if args.address_file:
            Path(args.address_file).expanduser().write_text(address + "\n")
        print(f"scheduler {address}: medai segment INPUTS -o OUT --cluster {address}", flush=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
