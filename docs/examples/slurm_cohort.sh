#!/usr/bin/env bash
# Segment a whole cohort on a SLURM cluster with MedAI and dask-jobqueue (issue 18, docs/cluster.md).
#
# Run it on the login node, in the Python environment MedAI is installed in, inside tmux/screen:
#
#   COHORT=/shared/cohort OUT=/shared/labels ACCOUNT=myproject QUEUE=gpu JOBS=8 \
#       bash docs/examples/slurm_cohort.sh
#
# What it does:
#   1. starts a Dask scheduler here and JOBS SLURM jobs, each one Dask worker (one case at a time,
#      CORES torch threads, MEMORY of RAM) with Testing/tools/medai_dask_cluster.py;
#   2. runs `medai segment COHORT -o OUT --cluster tcp://...` against it: every worker loads the model
#      once and keeps it for its next cases; each output is written atomically (a case killed with
#      its job leaves no partial file); a case whose worker died is run again on another worker;
#      failed cases are listed in the report and the others finish (exit status 3 = partial);
#   3. stops the cluster (cancels the jobs) when medai ends, or on Ctrl-C.
#
# Run it again with the same OUT after an interruption: --resume skips the cases already complete.
# KIND=local tries the whole chain on one computer (jobs are local processes; no SLURM needed).
# Inputs, outputs and the report must be on storage every node sees.
set -euo pipefail

COHORT=${COHORT:?set COHORT to the folder of input images (or DICOM studies)}
OUT=${OUT:?set OUT to the output folder (shared storage)}
MODEL=${MODEL:-}                 # a catalogue name or a bundle folder; empty: the default model
KIND=${KIND:-slurm}              # slurm | pbs | local
JOBS=${JOBS:-4}
CORES=${CORES:-4}
MEMORY=${MEMORY:-16GB}           # per job; a 512x512x300 CT with a Model Zoo bundle peaks at ~1.5-2 GB
WALLTIME=${WALLTIME:-04:00:00}
QUEUE=${QUEUE:-}
ACCOUNT=${ACCOUNT:-}
GPU=${GPU:-}                     # e.g. GPU=1 books one GPU per job (--gres=gpu:1) and runs on it
PYTHON=${PYTHON:-$(command -v python)}
MEDAI=${MEDAI:-"$PYTHON -m MedAILib.cli"}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOL=${TOOL:-$HERE/../../Testing/tools/medai_dask_cluster.py}

mkdir -p "$OUT"
ADDRESS_FILE=$(mktemp "${TMPDIR:-/tmp}/medai-scheduler.XXXXXX")
rm -f "$ADDRESS_FILE"

args=("$KIND" --jobs "$JOBS" --cores "$CORES" --memory "$MEMORY" --walltime "$WALLTIME" --port 0
      --python "$PYTHON" --address-file "$ADDRESS_FILE")
[ -n "$QUEUE" ] && args+=(--queue "$QUEUE")
[ -n "$ACCOUNT" ] && args+=(--account "$ACCOUNT")
[ -n "$GPU" ] && args+=("--job-extra=--gres=gpu:$GPU")

"$PYTHON" "$TOOL" "${args[@]}" &
CLUSTER_PID=$!
trap 'kill -TERM "$CLUSTER_PID" 2>/dev/null || true; wait "$CLUSTER_PID" 2>/dev/null || true; rm -f "$ADDRESS_FILE"' EXIT

for _ in $(seq 1 120); do                       # the scheduler starts in seconds; jobs may queue longer
    [ -s "$ADDRESS_FILE" ] && break
    kill -0 "$CLUSTER_PID" 2>/dev/null || { echo "the cluster script ended early" >&2; exit 1; }
    sleep 1
done
[ -s "$ADDRESS_FILE" ] || { echo "no scheduler address after 120 s" >&2; exit 1; }
ADDRESS=$(cat "$ADDRESS_FILE")
echo "scheduler: $ADDRESS ($JOBS $KIND job(s) requested)"

model_args=()
[ -n "$MODEL" ] && model_args=(--model "$MODEL")
device=cpu
[ -n "$GPU" ] && device=auto
status=0
# shellcheck disable=SC2086  # MEDAI may be "python -m MedAILib.cli"
$MEDAI segment "$COHORT" -o "$OUT" "${model_args[@]}" --device "$device" --resume \
    --report "$OUT/report.csv" --cluster "$ADDRESS" ${MEDAI_ARGS:-} || status=$?
echo "medai segment ended with exit status $status (0: all done, 3: some cases failed: see $OUT/report.csv)"
exit "$status"
