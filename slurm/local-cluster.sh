#!/usr/bin/env bash
# local-cluster.sh -- a real one-node SLURM cluster (munged + slurmctld + slurmd)
# on this machine, without systemd, for integration tests and demos.
#
#   bash slurm/local-cluster.sh start    # install if needed, configure, start, wait until the node is idle
#   bash slurm/local-cluster.sh status   # daemons + sinfo/squeue; exit 0 only if the cluster is usable
#   bash slurm/local-cluster.sh stop     # stop the daemons this script started (state folder is kept)
#   bash slurm/local-cluster.sh env      # print the `export SLURM_CONF=...` line
#
# Environment (all optional):
#   SLURM_LOCAL_STATE            state folder (default /tmp/pipeline-slurm)
#   SLURM_LOCAL_MAX_ARRAY_SIZE   slurm.conf MaxArraySize (default 1001)
#   SLURM_LOCAL_CLUSTER_NAME     ClusterName (default pipeline-local)
#   SLURM_LOCAL_CTLD_PORT        SlurmctldPort (default 6817)
#   SLURM_LOCAL_SLURMD_PORT      SlurmdPort (default 6818)
#   SLURM_LOCAL_TIMEOUT          seconds to wait for the node to become usable (default 90)
#   SLURM_LOCAL_LINK_ETC         1 (default): make /etc/slurm/slurm.conf a symlink to the
#                                generated config so plain `sbatch` works without SLURM_CONF
#   SLURM_LOCAL_CRED_EXPIRE      AuthInfo cred_expire seconds (default 10); also the delay before a
#                                requeued job may start again (Slurm's default is 120)
#   SLURM_LOCAL_CLEAN            1: discard saved slurmctld state (jobs, job-id counter) on start
set -euo pipefail

STATE="${SLURM_LOCAL_STATE:-/tmp/pipeline-slurm}"
MAX_ARRAY_SIZE="${SLURM_LOCAL_MAX_ARRAY_SIZE:-1001}"
CLUSTER_NAME="${SLURM_LOCAL_CLUSTER_NAME:-pipeline-local}"
CTLD_PORT="${SLURM_LOCAL_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURM_LOCAL_SLURMD_PORT:-6818}"
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-90}"
LINK_ETC="${SLURM_LOCAL_LINK_ETC:-1}"
CLEAN="${SLURM_LOCAL_CLEAN:-0}"
CRED_EXPIRE="${SLURM_LOCAL_CRED_EXPIRE:-10}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

CONF="$STATE/slurm.conf"
MUNGE_DIR="$STATE/munge"
MUNGE_KEY="$MUNGE_DIR/munge.key"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
LOG_DIR="$STATE/log"
RUN_DIR="$STATE/run"
CTLD_STATE="$STATE/slurmctld"
SPOOL="$STATE/slurmd"
ETC_CONF=/etc/slurm/slurm.conf

NODE="$(hostname -s 2>/dev/null || hostname)"
NODE="${NODE%%.*}"

DAEMONS=(munged slurmctld slurmd)

export SLURM_CONF="$CONF"
# The daemons live in /usr/sbin, which some non-login root shells lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

say() { printf '[local-cluster] %s\n' "$*"; }
die() { printf '[local-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

pid_file() {
    case "$1" in
        munged) echo "$MUNGE_DIR/munged.pid" ;;
        *) echo "$RUN_DIR/$1.pid" ;;
    esac
}
log_file() {
    case "$1" in
        munged) echo "$MUNGE_DIR/munged.log" ;;
        *) echo "$LOG_DIR/$1.log" ;;
    esac
}

# Print the pid of daemon $1 if its pid file names a live process of that name.
daemon_pid() {
    local f pid comm
    f="$(pid_file "$1")"
    [[ -s "$f" ]] || return 1
    pid="$(tr -dc '0-9' <"$f")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ "$comm" == "$1" ]] || return 1
    echo "$pid"
}

log_tail() {
    local f
    f="$(log_file "$1")"
    echo "---- last lines of $f ----" >&2
    tail -n 25 "$f" >&2 2>/dev/null || echo "(no log file)" >&2
    if [[ -s "$LOG_DIR/$1.stderr" ]]; then
        echo "---- $LOG_DIR/$1.stderr ----" >&2
        tail -n 15 "$LOG_DIR/$1.stderr" >&2 2>/dev/null
    fi
    echo "----" >&2
}

fail_daemon() {  # fail_daemon NAME MESSAGE
    printf '[local-cluster] ERROR: %s: %s\n' "$1" "$2" >&2
    log_tail "$1"
    exit 1
}

need_root() {
    [[ "$(id -u)" == 0 ]] || die "'$1' must run as root (the daemons run as SlurmUser=root and the script writes $ETC_CONF)"
}

# ---------------------------------------------------------------- install
install_packages() {
    local missing=()
    for b in munged mungekey munge slurmctld slurmd sbatch sinfo squeue sacct scontrol scancel; do
        command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    say "missing binaries: ${missing[*]} -> installing slurm-wlm and munge with apt-get"
    command -v apt-get >/dev/null || die "apt-get not found; install slurm-wlm (22.05+) and munge by hand"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' init scripts from starting system-wide munged/slurm
    # daemons during the install (we start our own below).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && made_policy=1
    fi
    local ok=0
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
        apt-get update
    fi
    if apt-get install -y slurm-wlm munge; then
        ok=1
    else
        apt-get update && apt-get install -y slurm-wlm munge && ok=1
    fi
    ((made_policy)) && rm -f "$policy"
    ((ok)) || die "apt-get install -y slurm-wlm munge failed"
    for b in munged slurmctld slurmd sbatch; do
        command -v "$b" >/dev/null 2>&1 || die "$b still missing after apt-get install"
    done
}

# ---------------------------------------------------------------- config
real_memory_mb() {
    # 90% of MemAvailable, rounded down to 512 MB steps (never above what slurmd detects).
    local avail_kb mb
    avail_kb="$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)"
    [[ -n "$avail_kb" ]] || avail_kb="$(awk '/^MemFree:/ {print $2}' /proc/meminfo)"
    mb=$((avail_kb * 9 / 10 / 1024 / 512 * 512))
    ((mb >= 512)) || mb=$((avail_kb / 1024 / 2))
    ((mb >= 1)) || mb=1
    echo "$mb"
}

# If the config already exists for this node, keep its RealMemory so that
# restarts do not change the config just because free memory moved a bit.
pick_real_memory() {
    local old
    if [[ -f "$CONF" ]]; then
        old="$(sed -n "s/^NodeName=$NODE .*RealMemory=\([0-9]*\).*/\1/p" "$CONF" | head -n1)"
        if [[ -n "$old" ]]; then
            local total_mb
            total_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
            if ((old <= total_mb)); then
                echo "$old"
                return
            fi
        fi
    fi
    real_memory_mb
}

write_conf() {  # write_conf TARGET
    local cpus mem max_jobs
    cpus="$(nproc)"
    mem="$(pick_real_memory)"
    max_jobs=$((MAX_ARRAY_SIZE * 10))
    ((max_jobs >= 50000)) || max_jobs=50000
    cat >"$1" <<EOF
# Generated by slurm/local-cluster.sh -- do not edit (regenerated on start).
# One-node local cluster; state lives in $STATE
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root

AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$CRED_EXPIRE

StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups anywhere: works on hosts without a writable cgroup hierarchy.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
PropagateResourceLimits=NONE
MpiDefault=none
MailProg=/bin/true

# Accounting: no slurmdbd. Finished jobs are written to a text file that
# 'sacct --completion' (sacct -c) can read; plain 'sacct' reports
# "Slurm accounting storage is disabled". See slurm/README.md.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log

# Scheduling: several 1-CPU array tasks share the node; fast turnaround.
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5,batch_sched_delay=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=$max_jobs
# Keep finished jobs visible to 'scontrol show job' / squeue -t all for an hour.
MinJobAge=3600
JobRequeue=1
ReturnToService=2
KillWait=3
SlurmdParameters=config_overrides

NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

link_etc_conf() {
    [[ "$LINK_ETC" == 1 ]] || { say "SLURM_LOCAL_LINK_ETC=$LINK_ETC: not touching $ETC_CONF"; return 0; }
    mkdir -p /etc/slurm
    if [[ -L "$ETC_CONF" && "$(readlink "$ETC_CONF")" == "$CONF" ]]; then
        return 0
    fi
    if [[ -e "$ETC_CONF" || -L "$ETC_CONF" ]]; then
        local bak
        bak="$ETC_CONF.before-local-cluster.$(date +%Y%m%d%H%M%S)"
        mv "$ETC_CONF" "$bak"
        say "moved the previous $ETC_CONF to $bak"
    fi
    ln -s "$CONF" "$ETC_CONF"
    say "$ETC_CONF -> $CONF (plain sbatch/squeue/sacct work without SLURM_CONF)"
}

# ---------------------------------------------------------------- munge
setup_munge_key() {
    mkdir -p "$MUNGE_DIR"
    chown root:root "$MUNGE_DIR"
    chmod 0755 "$MUNGE_DIR"   # clients (any user) must reach the socket
    if [[ ! -s "$MUNGE_KEY" ]]; then
        rm -f "$MUNGE_KEY"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" >/dev/null
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        fi
    fi
    chown root:root "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
}

start_munged() {
    local pid
    if pid="$(daemon_pid munged)"; then
        say "munged already running (pid $pid)"
        return 0
    fi
    setup_munge_key
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$(pid_file munged)"
    # munged forks itself into the background and writes its pid file.
    if ! munged --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" \
        --pid-file="$(pid_file munged)" --log-file="$(log_file munged)" \
        --seed-file="$MUNGE_DIR/munged.seed" >"$LOG_DIR/munged.stderr" 2>&1; then
        fail_daemon munged "munged failed to start"
    fi
    local i
    for ((i = 0; i < 50; i++)); do
        if daemon_pid munged >/dev/null && munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
            say "munged started (pid $(daemon_pid munged), socket $MUNGE_SOCKET)"
            return 0
        fi
        sleep 0.2
    done
    fail_daemon munged "munged did not come up (no live pid or munge/unmunge round trip failed on $MUNGE_SOCKET)"
}

# ---------------------------------------------------------------- slurm daemons
port_in_use() {  # something accepts connections on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_port_free() {  # check_port_free DAEMON PORT
    if ! daemon_pid "$1" >/dev/null && port_in_use "$2"; then
        die "$1: port $2 is already in use by another process (another slurm cluster? see 'ss -ltnp'); set SLURM_LOCAL_${3}_PORT to use another port"
    fi
}

# slurmctld refuses to start when StateSaveLocation belongs to another ClusterName.
check_cluster_name() {
    local f="$CTLD_STATE/clustername" old
    [[ -f "$f" ]] || return 0
    old="$(tr -d '[:space:]' <"$f")"
    if [[ -n "$old" && "$old" != "$CLUSTER_NAME" ]]; then
        say "saved slurmctld state belongs to cluster '$old', not '$CLUSTER_NAME': removing $f"
        rm -f "$f"
    fi
}

wait_for_ctld() {
    local i pid
    for ((i = 0; i < 100; i++)); do
        pid="$(daemon_pid slurmctld)" || fail_daemon slurmctld "slurmctld exited right after starting"
        if scontrol ping 2>/dev/null | grep -q 'is UP'; then
            # make sure it is still ours that answered
            daemon_pid slurmctld >/dev/null || fail_daemon slurmctld "slurmctld exited right after starting"
            return 0
        fi
        sleep 0.2
    done
    fail_daemon slurmctld "slurmctld (pid $pid) does not answer 'scontrol ping' after 20s"
}

start_slurm_daemon() {  # start_slurm_daemon slurmctld|slurmd [extra args]
    local name="$1" pid i
    shift
    if pid="$(daemon_pid "$name")"; then
        say "$name already running (pid $pid)"
        return 0
    fi
    rm -f "$(pid_file "$name")"
    # Without -D the daemon forks into the background itself (new session,
    # stdio closed) and writes its pid file.
    if ! "$name" -f "$CONF" "$@" >"$LOG_DIR/$name.stderr" 2>&1; then
        fail_daemon "$name" "$name exited with an error during start"
    fi
    for ((i = 0; i < 50; i++)); do
        if pid="$(daemon_pid "$name")"; then
            say "$name started (pid $pid)"
            return 0
        fi
        sleep 0.2
    done
    fail_daemon "$name" "$name did not stay up (no live process for $(pid_file "$name"))"
}

node_state() {
    sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1
}

node_usable() {  # idle/mixed/allocated/completing and responding
    local s
    s="$(node_state)"
    [[ -n "$s" && "$s" != *'*' ]] || return 1
    case "$s" in
        idle | mixed | allocated | completing) return 0 ;;
    esac
    return 1
}

wait_for_node() {
    local deadline s last="" resumed=0 d
    deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        for d in "${DAEMONS[@]}"; do
            daemon_pid "$d" >/dev/null || fail_daemon "$d" "$d died while waiting for node $NODE"
        done
        s="$(node_state || true)"
        if [[ "$s" != "$last" ]]; then
            say "node $NODE state: ${s:-<no answer from slurmctld yet>}"
            last="$s"
        fi
        if node_usable; then
            return 0
        fi
        case "$s" in
            down* | drain* | fail* | inval*)
                if ((resumed < 3)); then
                    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                    resumed=$((resumed + 1))
                fi
                ;;
        esac
        sleep 1
    done
    echo "[local-cluster] ERROR: node $NODE not usable after ${TIMEOUT}s (last state: '${s:-none}')" >&2
    scontrol show node "$NODE" >&2 2>&1 || true
    log_tail slurmctld
    log_tail slurmd
    exit 1
}

# ---------------------------------------------------------------- commands
cmd_start() {
    need_root start
    local t0=$SECONDS
    install_packages
    mkdir -p "$STATE" "$LOG_DIR" "$RUN_DIR" "$CTLD_STATE" "$SPOOL"
    chmod 0755 "$STATE"

    # (Re)generate the config; if it changed while daemons run, restart them.
    local new="$STATE/.slurm.conf.new" changed=0
    write_conf "$new"
    if [[ -f "$CONF" ]] && cmp -s "$new" "$CONF"; then
        rm -f "$new"
    else
        [[ -f "$CONF" ]] && changed=1
        mv "$new" "$CONF"
        say "wrote $CONF"
    fi
    link_etc_conf

    if ((changed)); then
        local d
        for d in slurmd slurmctld; do
            if daemon_pid "$d" >/dev/null; then
                say "config changed -> restarting $d"
                stop_daemon "$d"
            fi
        done
    fi

    check_port_free slurmctld "$CTLD_PORT" CTLD
    check_port_free slurmd "$SLURMD_PORT" SLURMD
    check_cluster_name
    start_munged
    local ctld_args=()
    if [[ "$CLEAN" == 1 ]] && ! daemon_pid slurmctld >/dev/null; then
        say "SLURM_LOCAL_CLEAN=1: discarding saved slurmctld state"
        rm -rf "${CTLD_STATE:?}"/*
        ctld_args+=(-c)
    fi
    # -i: tolerate unreadable/stale state files left by an earlier run.
    start_slurm_daemon slurmctld -i "${ctld_args[@]}"
    wait_for_ctld
    start_slurm_daemon slurmd
    wait_for_node

    say "cluster is up in $((SECONDS - t0))s: node $NODE is $(node_state), partition debug"
    for d in "${DAEMONS[@]}"; do
        say "  $d pid $(daemon_pid "$d")  log $(log_file "$d")"
    done
    say "  SLURM_CONF=$CONF"
    [[ "$LINK_ETC" == 1 ]] && say "  $ETC_CONF is a symlink to it, so plain sbatch/squeue work too"
    say "  accounting: none (no slurmdbd); the pipeline reads job state from the sweep folder and squeue"
    say "run this in your shell (or: eval \"\$(bash $0 env)\"):"
    echo "export SLURM_CONF=$CONF"
}

stop_daemon() {
    local name="$1" pid i
    if ! pid="$(daemon_pid "$name")"; then
        say "$name: not running (by $(pid_file "$name"))"
        rm -f "$(pid_file "$name")"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for 15s -> SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$(pid_file "$name")"
    say "$name stopped (was pid $pid)"
}

cmd_stop() {
    need_root stop
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    say "state kept in $STATE (jobs and the job-id counter are recovered on next start)"
}

cmd_status() {
    local ok=0 d pid
    say "state folder: $STATE"
    say "SLURM_CONF:   $CONF"
    for d in "${DAEMONS[@]}"; do
        if pid="$(daemon_pid "$d")"; then
            say "$d: running (pid $pid)"
        else
            say "$d: NOT running"
            ok=1
        fi
    done
    if [[ -f "$CONF" ]] && daemon_pid slurmctld >/dev/null; then
        echo "== sinfo"
        sinfo 2>&1 || ok=1
        echo "== squeue"
        squeue 2>&1 || ok=1
        if node_usable; then
            say "node $NODE is usable ($(node_state))"
        else
            say "node $NODE is NOT usable (state '$(node_state)')"
            ok=1
        fi
    else
        ok=1
    fi
    if ((ok == 0)); then say "status: OK"; else say "status: NOT OK"; fi
    return "$ok"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
