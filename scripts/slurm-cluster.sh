#!/bin/bash
# A real single-node Slurm on loopback for the local OSCAR and the test suite.
#   slurm-cluster.sh install   apt-get install slurm-wlm, munge and bubblewrap when missing
#   slurm-cluster.sh start     install, write slurm.conf (and cgroup.conf), start munged, slurmctld,
#                              slurmd; wait for IDLE
#   slurm-cluster.sh stop      cancel every job, stop the daemons by their pid files, wait for them
#   slurm-cluster.sh status    print a summary; exit 1 when Slurm is not usable
# Runs as root without systemd. Daemons are found by pid file only, never by process name.
#
# --mem is enforced, as a real site does it, by the kernel: task/cgroup with ConstrainRAMSpace puts
# each job in a cgroup v1 memory cgroup limited to its --mem; a job over it is OOM-killed, Slurm ends
# it OUT_OF_MEMORY (squeue: OOM) and slurmstepd writes "error: Detected 1 oom-kill event(s) in
# StepId=<id>.batch. ..." to its output. That needs cgroup v1's memory and freezer hierarchies under
# /sys/fs/cgroup, writable by root (Slurm 22.05's cgroup/v2 wants systemd). Where they are not, Slurm
# polls each step's memory every second and kills a step over its --mem (jobacct_gather/linux,
# OverMemoryKill): the job ends FAILED with "error: StepId=<id>.batch exceeded memory limit (<bytes> >
# <bytes>), being killed", a CANCELLED banner and "error: Exceeded job memory limit" in its output
# (and a job over its --mem for less than a second may escape the poll).
set -euo pipefail

SLURM_CONF=/etc/slurm/slurm.conf
CGROUP_CONF=/etc/slurm/cgroup.conf
CGROUP_ROOT=/sys/fs/cgroup
RUN_DIR=/run/slurm
LOG_DIR=/var/log/slurm
MUNGE_RUN_DIR=/run/munge
MUNGE_PID=$MUNGE_RUN_DIR/munged.pid
SLURMCTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid
NODE=localhost
# Memory left to the rest of the machine: slurmd drains a node whose RealMemory exceeds what it sees.
MEMORY_MARGIN_MIB=1024
START_TIMEOUT_S=${SLURM_START_TIMEOUT:-60}

say() { printf 'slurm-cluster: %s\n' "$*"; }
die() { printf 'slurm-cluster: error: %s\n' "$*" >&2; exit 1; }

require_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons); try: sudo $0 $*"
}

# --- install ---------------------------------------------------------------------------------------

missing_packages() {
    local missing=()
    command -v sbatch >/dev/null 2>&1 && [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] \
        || missing+=(slurm-wlm)
    [ -x /usr/sbin/munged ] || missing+=(munge)
    command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
    echo "${missing[@]+"${missing[@]}"}"
}

cmd_install() {
    require_root install
    local missing
    missing=$(missing_packages)
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $missing by hand"
    say "installing $missing"
    local log
    log=$(mktemp)
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o Dpkg::Use-Pty=0 $missing; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "apt-get could not install $missing (its output is above)"
    fi
    rm -f "$log"
}

# --- pid files ----------------------------------------------------------------------------------

pid_alive() {  # pid_alive PIDFILE -> prints the pid and succeeds when that process exists
    local pidfile=$1 pid
    [ -s "$pidfile" ] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

lock_holder() {  # lock_holder FILE -> prints the pid holding a POSIX lock on FILE
    local inode
    inode=$(stat -c %i "$1" 2>/dev/null) || return 1
    awk -v inode="$inode" \
        '$2 == "POSIX" { split($6, id, ":"); if (id[3] == inode) { print $5; exit } }' \
        /proc/locks | grep .
}

recover_munge_pidfile() {
    # munged removes its pid file when a second munged fails to start; it still holds its socket
    # lock, which names it.
    local pid
    pid_alive "$MUNGE_PID" >/dev/null && return 0
    pid=$(lock_holder "$MUNGE_RUN_DIR/munge.socket.2.lock") || return 0
    kill -0 "$pid" 2>/dev/null && echo "$pid" >"$MUNGE_PID"
    return 0
}

serialise() {  # one start or stop at a time: concurrent starts would race for the daemons
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/slurm-cluster.lock"
    flock 9
}

stop_by_pidfile() {  # stop_by_pidfile NAME PIDFILE
    local name=$1 pidfile=$2 pid _
    pid=$(pid_alive "$pidfile") || { rm -f "$pidfile"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$pidfile"
}

# --- configuration ----------------------------------------------------------------------------

real_memory_mib() {
    local total_kib
    total_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    local mib=$(( total_kib / 1024 - MEMORY_MARGIN_MIB ))
    [ "$mib" -lt 256 ] && mib=$(( total_kib / 1024 / 2 ))
    echo "$mib"
}

cgroup_v1_usable() {  # cgroup v1's memory and freezer controllers, and root may limit memory
    local controller probe ok=1
    for controller in memory freezer; do
        [ "$(stat -f -c %T "$CGROUP_ROOT/$controller" 2>/dev/null)" = cgroupfs ] || return 1
    done
    probe=$CGROUP_ROOT/memory/oscar-jupyter-probe.$$
    mkdir "$probe" 2>/dev/null || return 1
    echo 64M 2>/dev/null >"$probe/memory.limit_in_bytes" && ok=0
    rmdir "$probe" 2>/dev/null || true
    return "$ok"
}

memory_enforcement() {  # cgroup | accounting: how --mem is enforced (see the top of this file)
    if cgroup_v1_usable; then echo cgroup; else echo accounting; fi
}

enforcement_of_conf() {  # how the written slurm.conf enforces --mem; empty when it predates that
    sed -n 's/^# --mem enforced by: //p' "$SLURM_CONF" 2>/dev/null | head -n 1
}

memory_settings() {  # memory_settings cgroup|accounting -> its slurm.conf lines
    case $1 in
        cgroup) printf '%s\n' ProctrackType=proctrack/cgroup TaskPlugin=task/cgroup \
            JobAcctGatherType=jobacct_gather/none ;;
        accounting) printf '%s\n' ProctrackType=proctrack/linuxproc TaskPlugin=task/none \
            JobAcctGatherType=jobacct_gather/linux JobAcctGatherParams=OverMemoryKill \
            JobAcctGatherFrequency=task=1 ;;
    esac
}

write_cgroup_conf() {
    local tmp
    tmp=$(mktemp /etc/slurm/.cgroup.conf.XXXXXX)
    cat >"$tmp" <<EOF
# Written by oscar-jupyter scripts/slurm-cluster.sh: each job's memory limited to its --mem.
CgroupPlugin=cgroup/v1
CgroupMountpoint=$CGROUP_ROOT
CgroupAutomount=yes
ConstrainRAMSpace=yes
EOF
    # RAM + swap limited to --mem too where the kernel accounts swap (a site's usual setting)
    if [ -e "$CGROUP_ROOT/memory/memory.memsw.limit_in_bytes" ]; then
        echo ConstrainSwapSpace=yes >>"$tmp"
    fi
    chmod 0644 "$tmp"
    mv -f "$tmp" "$CGROUP_CONF"
}

write_slurm_conf() {
    local cpus memory tmp enforcement
    cpus=$(nproc)
    memory=$(real_memory_mib)
    enforcement=$(memory_enforcement)
    mkdir -p /etc/slurm
    if [ "$enforcement" = cgroup ]; then write_cgroup_conf; else rm -f "$CGROUP_CONF"; fi
    tmp=$(mktemp /etc/slurm/.slurm.conf.XXXXXX)
    cat >"$tmp" <<EOF
# Written by oscar-jupyter scripts/slurm-cluster.sh: a single node on loopback.
# --mem enforced by: $enforcement
ClusterName=oscar-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
$(memory_settings "$enforcement")
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
MailProg=/bin/true
MinJobAge=300
ReturnToService=2
NodeName=$NODE NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 0644 "$tmp"
    mv -f "$tmp" "$SLURM_CONF"
}

# --- start --------------------------------------------------------------------------------------

start_munge() {
    recover_munge_pidfile
    if pid_alive "$MUNGE_PID" >/dev/null; then return 0; fi
    mkdir -p "$MUNGE_RUN_DIR" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_RUN_DIR" /var/log/munge /var/lib/munge
    chmod 0755 "$MUNGE_RUN_DIR"
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    # 9>&-: a daemon must not inherit the start lock, or it would hold it for its lifetime
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" 9>&- \
        || die "munged did not start; see /var/log/munge/munged.log"
    local _
    for _ in $(seq 1 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munge does not answer (munge -n | unmunge fails); see /var/log/munge/munged.log"
}

node_state() {
    scontrol show node "$NODE" 2>/dev/null | sed -n 's/.*State=\([^ ]*\).*/\1/p' | head -n 1
}

controller_answers() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

wait_for_node() {
    local deadline=$(( SECONDS + START_TIMEOUT_S )) state="" resumed=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        state=$(node_state)
        case "$state" in
            IDLE*|MIXED*|ALLOCATED*|COMPLETING*) return 0 ;;
            *DOWN*|*DRAIN*|*FAIL*)
                if [ "$resumed" = 0 ] && pid_alive "$SLURMD_PID" >/dev/null; then
                    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi ;;
        esac
        sleep 0.2
    done
    die "node $NODE is ${state:-unknown} after ${START_TIMEOUT_S} s; see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
}

cmd_start() {
    require_root start
    cmd_install
    serialise
    start_munge
    mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" "$RUN_DIR"
    local ctld_up=0 slurmd_up=0
    pid_alive "$SLURMCTLD_PID" >/dev/null && ctld_up=1
    pid_alive "$SLURMD_PID" >/dev/null && slurmd_up=1
    if [ "$ctld_up" = 0 ] && [ "$slurmd_up" = 0 ]; then
        write_slurm_conf
    elif [ ! -s "$SLURM_CONF" ]; then
        die "a Slurm daemon runs but $SLURM_CONF is missing; run '$0 stop' first"
    fi
    if [ "$ctld_up" = 0 ]; then
        /usr/sbin/slurmctld >>"$LOG_DIR/slurmctld.start.log" 2>&1 9>&- \
            || die "slurmctld did not start; see $LOG_DIR/slurmctld.log"
    fi
    local _
    for _ in $(seq 1 100); do
        controller_answers && break
        sleep 0.1
    done
    controller_answers || die "slurmctld does not answer 'scontrol ping'; see $LOG_DIR/slurmctld.log"
    if [ "$slurmd_up" = 0 ]; then
        /usr/sbin/slurmd -N "$NODE" >>"$LOG_DIR/slurmd.start.log" 2>&1 9>&- \
            || die "slurmd did not start; see $LOG_DIR/slurmd.log"
    fi
    wait_for_node
    if [ "$ctld_up" = 1 ] && [ "$slurmd_up" = 1 ]; then
        say "already running (node $NODE $(node_state))"
        [ -n "$(enforcement_of_conf)" ] \
            || say "its slurm.conf predates --mem enforcement; run '$0 stop', then '$0 start'"
    else
        say "started (node $NODE $(node_state), $(nproc) CPUs)"
    fi
}

# --- stop ---------------------------------------------------------------------------------------

cmd_stop() {
    require_root stop
    serialise
    recover_munge_pidfile
    if pid_alive "$SLURMCTLD_PID" >/dev/null && controller_answers; then
        local jobs
        jobs=$(squeue --noheader -o '%i' 2>/dev/null | tr '\n' ' ')
        if [ -n "${jobs// /}" ]; then
            # shellcheck disable=SC2086 # one word per job id
            scancel $jobs 2>/dev/null || true
            local _
            for _ in $(seq 1 50); do
                [ -z "$(squeue --noheader -t running,completing -o '%i' 2>/dev/null)" ] && break
                sleep 0.1
            done
        fi
    fi
    # slurmd and slurmctld each take about 2 s to exit; stop them together, munged after them.
    stop_by_pidfile slurmd "$SLURMD_PID" &
    stop_by_pidfile slurmctld "$SLURMCTLD_PID" &
    wait
    stop_by_pidfile munged "$MUNGE_PID"
    say "stopped"
}

# --- status -------------------------------------------------------------------------------------

cmd_status() {
    local down=0 pid name pidfile
    recover_munge_pidfile 2>/dev/null || true
    for name in munged slurmctld slurmd; do
        case $name in
            munged) pidfile=$MUNGE_PID ;;
            slurmctld) pidfile=$SLURMCTLD_PID ;;
            slurmd) pidfile=$SLURMD_PID ;;
        esac
        if pid=$(pid_alive "$pidfile"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s not running\n' "$name"
            down=1
        fi
    done
    if [ "$down" = 0 ] && controller_answers; then
        local state
        state=$(node_state)
        printf '%-10s %s\n' node "$NODE ${state:-unknown}"
        printf '%-10s %s\n' jobs "$(squeue --noheader -o '%i' 2>/dev/null | wc -l) in the queue"
        local enforcement
        enforcement=$(enforcement_of_conf)
        printf '%-10s %s\n' memory "--mem enforced by ${enforcement:-nothing (an older slurm.conf)}"
        case "$state" in
            IDLE*|MIXED*|ALLOCATED*|COMPLETING*) ;;
            *) down=1 ;;
        esac
    else
        printf '%-10s %s\n' node "unknown (controller not answering)"
        down=1
    fi
    [ "$down" = 0 ] && echo "slurm: up" || echo "slurm: down"
    return "$down"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
