#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine without systemd (a container, a CI runner, a
# workstation), so that the job templates in jobs/ can be submitted with sbatch as on a real
# cluster. Recipe and pitfalls: ../shared/STACK.md ("One-node Slurm without systemd").
#
# Everything lives in one state folder, CLOQ_SLURM_DIR (default /tmp/cloq-slurm): slurm.conf,
# controller state, slurmd spool, pid files and logs (slurmctld.log, slurmd.log). Daemons die
# with the machine, and /tmp goes with them, so nothing stale survives a reboot. Slurm's clients
# read $SLURM_CONF; when /etc/slurm/slurm.conf does not exist it is made a link to ours so that
# plain `sbatch`/`sinfo` work too (an existing /etc/slurm/slurm.conf is never touched).
#
# Idempotent: if the cluster already answers `sinfo` with a usable node, it does nothing. Needs
# root (slurmd launches jobs as their users; munged must run as the munge user). Needs the
# packages of scripts/install-deps.sh. Prints one line; exit status 0 once the node is idle.
# Stop with scripts/slurm-down.sh.
set -euo pipefail

dir=${CLOQ_SLURM_DIR:-/tmp/cloq-slurm}
conf=$dir/slurm.conf
export SLURM_CONF=$conf

# Already up: both daemons alive and the node answers as usable. (A dead slurmd still shows as
# idle until SlurmdTimeout, hence the pid checks.)
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ -f "$conf" ] && alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid"; then
  state=$(timeout 5 sinfo -h -N -o %T 2>/dev/null | head -n1 || true)
  case "$state" in
    idle|mixed|allocated|completing)
      echo "slurm-up: already up (node $state; SLURM_CONF=$conf)"
      exit 0 ;;
  esac
fi

die() {
  echo "slurm-up: error: $*" >&2
  for log in "$dir/slurmctld.log" "$dir/slurmd.log"; do
    [ -f "$log" ] && { echo "--- last lines of $log" >&2; tail -n 15 "$log" >&2; }
  done
  exit 1
}

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n env CLOQ_SLURM_DIR="$dir" bash "$0" "$@"
  fi
  die "must run as root (or with password-less sudo): slurmd starts jobs as their users and munged runs as the munge user"
fi
for cmd in munged munge unmunge slurmctld slurmd sinfo sbatch; do
  command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found: run scripts/install-deps.sh (slurm-wlm, slurmctld, slurmd, slurm-client, munge)"
done
getent passwd munge >/dev/null || die "no 'munge' user: the munge package did not install cleanly"

# A half-started cluster from an earlier call (a daemon died, the node is down): stop what we
# started, by pid file, and start again from a clean controller state.
bash "$(dirname "$0")/slurm-down.sh" --quiet || true

# munge: the key and folders the Debian package expects, then munged as the munge user. A munged
# that already works (started by the system) is used as is and left running by slurm-down.sh.
mkdir -p "$dir"
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- munged --force || die "munged did not start (see /var/log/munge/munged.log)"
  touch "$dir/munged.ours"
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munged started but munge -n | unmunge fails"
fi

# slurm.conf: the minimum that works here (STACK.md). The node line is what slurmd detects;
# NodeAddr=127.0.0.1 keeps the controller from depending on how the hostname resolves (containers).
host=$(hostname -s)
node=$(slurmd -C | head -n1)
case "$node" in NodeName=*) ;; *) die "slurmd -C gave no NodeName line: $node" ;; esac
mkdir -p "$dir/ctld" "$dir/spool"
cat >"$conf" <<EOF
# Written by scripts/slurm-up.sh: a one-node cluster for testing cloq's job templates.
ClusterName=cloq
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=60
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=cloq Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$conf" ]; then
  mkdir -p /etc/slurm
  ln -sfn "$conf" /etc/slurm/slurm.conf
fi

slurmctld -i || die "slurmctld did not start"
slurmd || die "slurmd did not start"

state=""
for _ in $(seq 150); do
  state=$(timeout 5 sinfo -h -N -o %T 2>/dev/null | head -n1 || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
[ "$state" = idle ] || die "node not idle after 30 s (state '${state:-no answer}')"
cpus=$(sinfo -h -N -o %c | head -n1)
name=${node%% *}
echo "slurm-up: one-node Slurm up: node ${name#NodeName=} idle, $cpus CPUs, partition cloq (SLURM_CONF=$conf)"
