#!/usr/bin/env bash
# Stops the one-node Slurm cluster that scripts/slurm-up.sh started: cancels its jobs, stops
# slurmd and slurmctld (by their pid files), stops munged only if slurm-up.sh started it, removes
# the /etc/slurm/slurm.conf link if it points to our file, and deletes the state folder
# CLOQ_SLURM_DIR (default /tmp/cloq-slurm; logs included). Safe to run when nothing is up.
# --quiet: print nothing (used by slurm-up.sh to clear a half-started cluster).
set -uo pipefail

dir=${CLOQ_SLURM_DIR:-/tmp/cloq-slurm}
conf=$dir/slurm.conf
quiet=0
[ "${1:-}" = --quiet ] && quiet=1
say() { [ $quiet = 1 ] || echo "slurm-down: $*"; }

# Stop the process named in a pid file, if it is still alive: TERM, then KILL after 10 s.
stop_pidfile() {
  local f=$1 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
}

if [ -f "$conf" ]; then
  export SLURM_CONF=$conf
  jobs=$(timeout 5 squeue -h -o %i 2>/dev/null)
  # shellcheck disable=SC2086  # one argument per job id
  [ -n "$jobs" ] && timeout 10 scancel $jobs 2>/dev/null
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
fi
if [ -f "$dir/munged.ours" ]; then
  stop_pidfile /run/munge/munged.pid
fi
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
[ -d "$dir" ] && rm -rf "$dir"
say "stopped (state folder $dir removed)"
