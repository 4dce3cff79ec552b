#!/usr/bin/env bash
# mpirun with the settings Open MPI needs on a single machine or in a container (STACK.md):
# running as root, more ranks than cores, no ssh, shared-memory transport. Usage as mpirun's.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1} OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}
command -v ssh >/dev/null 2>&1 || export OMPI_MCA_plm_rsh_agent=
# Open MPI's mpirun answers a SIGTERM of its own by killing the ranks and exiting 1, whatever they
# return. Here a SIGTERM (or SIGINT) is passed on to mpirun, and this script then exits with the
# shell's 128 + signal, as cloq does when its ranks are signalled, so job scripts can tell a stop.
mpirun --oversubscribe --quiet "$@" &
pid=$!
sig=0
trap 'sig=15; kill -TERM "$pid" 2>/dev/null' TERM
trap 'sig=2; kill -TERM "$pid" 2>/dev/null' INT
rc=0
while :; do
  wait "$pid"
  rc=$?
  kill -0 "$pid" 2>/dev/null || break # wait returned for a trapped signal: mpirun still runs
done
[ "$sig" -ne 0 ] && exit $((128 + sig))
exit "$rc"
