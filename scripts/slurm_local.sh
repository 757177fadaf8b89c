#!/usr/bin/env bash
# A single-node Slurm on this machine, from Debian's packages, to try the `slurm` launcher:
#
#   sudo scripts/slurm_local.sh start    # munged, slurmctld, slurmd; waits for `srun hostname`
#   scripts/slurm_local.sh status        # what runs, sinfo, squeue
#   sudo scripts/slurm_local.sh stop     # stops the three daemons it started, by PID
#
# Needs root (the daemons run as root and munged as `munge`). Installs slurm-wlm and munge
# with apt-get when they are missing. One node named `hostname -s` with this machine's cores
# and 90% of its memory, partition `debug`, no accounting (sacct fails, as on a cluster
# without slurmdbd). Everything it writes is under $SLURM_LOCAL_DIR (default
# /tmp/resnet-exp-slurm): slurm.conf, the spool and state folders, logs, PID files.
# /etc/slurm/slurm.conf is made a link to that slurm.conf when there is none, so that
# sinfo/sbatch/squeue find it; else export SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf.
# `start` is idempotent: what already runs is left as it is.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/resnet-exp-slurm}"
CONF="$DIR/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf
MUNGE_RUN=/run/munge
CONF_CHANGED=0
export SLURM_CONF="$CONF"

say() { echo "slurm_local: $*" >&2; }
die() {
    say "$*"
    exit 1
}

alive() { # alive PIDFILE: the process of the PID file runs
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sinfo >/dev/null || missing+=(slurm-client)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$DIR/apt.log" 2>&1 ||
        { apt-get update -q >>"$DIR/apt.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$DIR/apt.log" 2>&1; } ||
        die "apt-get could not install ${missing[*]} (see $DIR/apt.log)"
}

write_conf() {
    local host cpus mem_mb
    host="$(hostname -s)"
    cpus="$(nproc --all)"
    mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))
    mkdir -p "$DIR/spool/slurmctld" "$DIR/spool/slurmd" "$DIR/log"
    cat >"$CONF.new" <<EOF
# written by scripts/slurm_local.sh: one node, no accounting
ClusterName=resnetexp
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/spool/slurmctld
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=60
DefMemPerCPU=512
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -f "$CONF" ]] && cmp -s "$CONF" "$CONF.new"; then
        rm "$CONF.new"
    else
        mv "$CONF.new" "$CONF"
        CONF_CHANGED=1
    fi
    if [[ ! -e "$ETC_CONF" && ! -L "$ETC_CONF" ]]; then
        mkdir -p /etc/slurm && ln -s "$CONF" "$ETC_CONF"
    elif [[ "$(readlink -f "$ETC_CONF")" != "$(readlink -f "$CONF")" ]]; then
        say "$ETC_CONF is another cluster's: export SLURM_CONF=$CONF to use this one"
    fi
}

start_munge() {
    if [[ -S "$MUNGE_RUN/munge.socket.2" ]] && alive "$MUNGE_RUN/munged.pid"; then
        return 0
    fi
    mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 0755 "$MUNGE_RUN"
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then
            runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
        else
            create-munge-key -f
        fi
    fi
    runuser -u munge -- munged || die "munged did not start (see /var/log/munge/munged.log)"
    echo "$(cat "$MUNGE_RUN/munged.pid")" >"$DIR/munged.pid"
    munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
}

start_daemon() { # start_daemon NAME: slurmctld or slurmd, unless its PID file says it runs
    local name="$1"
    alive "$DIR/$name.pid" && return 0
    "/usr/sbin/$name" -f "$CONF" || die "$name did not start (see $DIR/log/$name.log)"
}

wait_ready() {
    local host state
    host="$(hostname -s)"
    for _ in $(seq 60); do
        state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
        case "$state" in
        idle* | mix* | alloc*) break ;;
        down* | drain* | fail*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 1
    done
    [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]] ||
        die "node $host is '${state:-unknown}', not idle, after 60 s (see $DIR/log/)"
    if [[ "$state" == alloc* ]]; then # busy with jobs: srun would wait for them
        say "node $host is busy with jobs: not trying srun"
        return 0
    fi
    timeout 60 srun -N1 -n1 -c1 --mem=64 -t 1 hostname >/dev/null ||
        die "srun hostname failed (see $DIR/log/)"
}

cmd_start() {
    [[ $EUID -eq 0 ]] || die "start needs root (the daemons run as root, munged as munge)"
    mkdir -p "$DIR"
    install_packages
    write_conf
    start_munge
    if ((CONF_CHANGED)) && alive "$DIR/slurmctld.pid"; then # running with an older slurm.conf
        scontrol reconfigure || die "scontrol reconfigure failed (see $DIR/log/)"
    fi
    start_daemon slurmctld
    start_daemon slurmd
    wait_ready
    say "up: node $(hostname -s), partition debug, $(nproc --all) CPUs; SLURM_CONF=$CONF"
}

cmd_stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        if alive "$DIR/$name.pid"; then
            pid="$(cat "$DIR/$name.pid")"
            kill "$pid"
            for _ in $(seq 20); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            say "stopped $name (pid $pid)"
        fi
        rm -f "$DIR/$name.pid"
    done
}

cmd_status() {
    local name up=0
    for name in munged slurmctld slurmd; do
        if alive "$DIR/$name.pid"; then
            say "$name: running (pid $(cat "$DIR/$name.pid"))"
        elif [[ $name == munged ]] && alive "$MUNGE_RUN/munged.pid"; then
            say "munged: running (pid $(cat "$MUNGE_RUN/munged.pid"), not started by this script)"
        else
            say "$name: not running"
            up=1
        fi
    done
    if ((up == 0)); then
        sinfo
        squeue
    fi
    return $up
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status   (state in \$SLURM_LOCAL_DIR, default /tmp/resnet-exp-slurm)" >&2
    exit 2
    ;;
esac
