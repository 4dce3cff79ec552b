#!/usr/bin/env bash
# mpirun with the settings Open MPI needs on a single machine or in a container (STACK.md):
# running as root, more ranks than cores, no ssh, shared-memory transport. Usage as mpirun's.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1} OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}
command -v ssh >/dev/null 2>&1 || export OMPI_MCA_plm_rsh_agent=
exec mpirun --oversubscribe --quiet "$@"
