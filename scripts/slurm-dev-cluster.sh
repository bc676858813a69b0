#!/usr/bin/env bash
# slurm-dev-cluster.sh — a real one-node SLURM cluster on this machine, for tests.
#
#   scripts/slurm-dev-cluster.sh start    install (if needed), configure, start, smoke-test
#   scripts/slurm-dev-cluster.sh stop     stop every daemon it started (by pid file)
#   scripts/slurm-dev-cluster.sh status   show each daemon and `sinfo`; exit 0 iff usable
#
# Runs as root, without systemd, from Debian 12's packages (SLURM 22.05). All state,
# configs, pid files and logs live in one private folder; /etc/slurm/slurm.conf is a copy
# of the private one so that sbatch/sacct/sinfo (and submitit) find the cluster.
# Accounting (slurmdbd backed by a private MariaDB) is on, because submitit reads job
# states with sacct. `start` is idempotent: when everything is up it only checks health.
#
# Environment:
#   MASKBENCH_SLURM_DIR      private state folder          (default /var/tmp/maskbench-slurm)
#   MASKBENCH_SLURM_CPUS     CPUs to advertise             (default: nproc; more is allowed)
#   MASKBENCH_SLURM_DB_PORT  private MariaDB port          (default 3307)
#   MASKBENCH_SLURM_CLUSTER  cluster name                  (default maskbench)
#
# Facts behind the settings: shared/notes/slurm.md.
set -euo pipefail

STATE_DIR=${MASKBENCH_SLURM_DIR:-/var/tmp/maskbench-slurm}
CLUSTER=${MASKBENCH_SLURM_CLUSTER:-maskbench}
DB_PORT=${MASKBENCH_SLURM_DB_PORT:-3307}
NPROC=$(nproc)
CPUS=${MASKBENCH_SLURM_CPUS:-$NPROC}
NODE=$(uname -n)
NODE=${NODE%%.*} # slurmd finds its NodeName from the short host name

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server-core mariadb-client-core)

ETC_DIR=$STATE_DIR/etc
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
DB_DIR=$STATE_DIR/mariadb
DB_SOCK=$RUN_DIR/mariadb.sock
SLURM_CONF_PRIVATE=$ETC_DIR/slurm.conf
SLURM_CONF_SYSTEM=/etc/slurm/slurm.conf
MUNGE_PIDFILE=/run/munge/munged.pid # munged's default; libmunge clients use /run/munge too

# Timeouts (seconds) for the readiness waits.
T_DAEMON=30
T_NODE=30
T_SMOKE=60

log() { printf 'slurm-dev-cluster: %s\n' "$*"; }
die() {
    printf 'slurm-dev-cluster: ERROR: %s\n' "$*" >&2
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Print the last lines of a log file to stderr (for failure reports).
show_log() {
    local f=$1
    if [[ -s $f ]]; then
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2
        printf -- '---\n' >&2
    else
        printf -- '(no log at %s)\n' "$f" >&2
    fi
}

# ---------------------------------------------------------------- processes

# pid_of PIDFILE: the pid in PIDFILE, or nothing.
pid_of() { tr -dc '0-9' 2>/dev/null <"$1" || true; }

# proc_alive PID NAME: true if PID is a live (non-zombie) process called NAME.
# `kill -0` succeeds on zombies (nothing may reap daemons here), so read /proc/PID/stat.
proc_alive() {
    local pid=$1 name=$2 stat
    [[ -n $pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # drop "pid (comm) "; the state letter comes first
    [[ ${stat:0:1} != Z && ${stat:0:1} != X ]]
}

# pid_alive PIDFILE NAME: PIDFILE names a live process called NAME.
pid_alive() { proc_alive "$(pid_of "$1")" "$2"; }

# wait_gone PID NAME TENTHS: wait up to TENTHS x 0.1 s for the process to end; 1 if it lives.
wait_gone() {
    local i
    for ((i = 0; i < $3; i++)); do
        proc_alive "$1" "$2" || return 0
        sleep 0.1
    done
    ! proc_alive "$1" "$2"
}

# stop_pidfile PIDFILE NAME: SIGTERM, wait up to 15 s (zombies count as gone), then SIGKILL.
stop_pidfile() {
    local pidfile=$1 name=$2 pid
    pid=$(pid_of "$pidfile")
    if ! proc_alive "$pid" "$name"; then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$name" 150; then
        log "$name did not stop in 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" "$name" 50 || true
    fi
    rm -f "$pidfile"
}

# wait_for TIMEOUT WHAT LOGFILE CMD...: run CMD every 0.2 s until it succeeds.
wait_for() {
    local timeout=$1 what=$2 logfile=$3
    shift 3
    local deadline
    deadline=$(($(date +%s) + timeout))
    until "$@" >/dev/null 2>&1; do
        if (($(date +%s) >= deadline)); then
            printf 'slurm-dev-cluster: ERROR: %s not ready after %s s (check: %s)\n' \
                "$what" "$timeout" "$*" >&2
            show_log "$logfile"
            exit 1
        fi
        sleep 0.2
    done
}

# port_busy PORT: something already listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_port_free() {
    local port=$1 who=$2
    if port_busy "$port"; then
        die "127.0.0.1:$port is in use by another process, but $who needs it (see: ss -ltnp)"
    fi
}

# ---------------------------------------------------------------- checks

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
db_ok() { mariadb --no-defaults --socket="$DB_SOCK" -uroot -e 'SELECT 1' >/dev/null 2>&1; }
# slurmdbd answers; keeps the registered cluster names in CLUSTERS for register_cluster.
CLUSTERS=""
slurmdbd_ok() { CLUSTERS=$(timeout 5 sacctmgr -n -P list cluster format=cluster 2>/dev/null); }
slurmctld_ok() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1; }
# A node is usable when it can run jobs now: idle, or busy with jobs (mixed, allocated).
node_ok() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

# ---------------------------------------------------------------- install

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then return 0; fi
    [[ $(id -u) == 0 ]] || die "packages missing (${missing[*]}) and not root"
    log "installing ${missing[*]}"
    # Keep maintainer scripts from starting services (there is no systemd to stop them).
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    local rc=0
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends)
    if ! "${apt[@]}" "${missing[@]}" >"$LOG_DIR/apt.log" 2>&1; then
        log "install failed without a fresh package list; running apt-get update"
        { apt-get update -q && "${apt[@]}" "${missing[@]}"; } >>"$LOG_DIR/apt.log" 2>&1 || rc=$?
    fi
    if ((own_policy)); then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    if ((rc != 0)); then
        show_log "$LOG_DIR/apt.log"
        die "apt-get install ${missing[*]} failed"
    fi
}

# ---------------------------------------------------------------- configuration

# write_if_changed FILE MODE: replace FILE with stdin if different; true if it changed.
write_if_changed() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

# Set when a config file changed: daemons already running with the old one restart.
SLURM_CONF_CHANGED=0
DBD_CONF_CHANGED=0

write_configs() {
    mkdir -p "$ETC_DIR" "$RUN_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" \
        "$STATE_DIR/jobs" /etc/slurm
    chmod 700 "$STATE_DIR/slurmctld"

    # Password of the private MariaDB's slurm user, made once.
    if [[ ! -s $ETC_DIR/db.pass ]]; then
        (umask 077 && od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$ETC_DIR/db.pass")
    fi
    DB_PASS=$(cat "$ETC_DIR/db.pass")

    # ~90 % of the machine's memory (what `slurmd -C` reports), in MiB.
    local mem
    mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)

    # Advertising more CPUs than the machine has needs config_overrides, or slurmd
    # drains the node ("Low socket*core*thread count").
    local overrides=""
    if ((CPUS > NPROC)); then
        overrides="SlurmdParameters=config_overrides"
    fi

    if write_if_changed "$SLURM_CONF_PRIVATE" 644 <<EOF; then SLURM_CONF_CHANGED=1; fi
# Written by scripts/slurm-dev-cluster.sh (maskbench) — one-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime + fast scheduler passes: a trivial job round-trips in ~1 s
# and a requeued job restarts in ~20 s instead of > 2.5 min.
AuthInfo=cred_expire=10
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=5,bf_interval=5
# Reject at submission what can never run (else it pends forever and job.result() hangs).
EnforcePartLimits=ALL
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# No cgroups here: plain process tracking, no task containment, no usage gathering.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=5
InactiveLimit=0
MailProg=/bin/true
MpiDefault=none
$overrides
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Accounting through slurmdbd: submitit reads job states with sacct.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    # slurmdbd refuses a slurmdbd.conf that others can read: mode 600.
    if write_if_changed "$ETC_DIR/slurmdbd.conf" 600 <<EOF; then DBD_CONF_CHANGED=1; fi
# Written by scripts/slurm-dev-cluster.sh (maskbench).
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF

    # Clients (sbatch, sacct, submitit) read /etc/slurm/slurm.conf; daemons get SLURM_CONF.
    if ! cmp -s "$SLURM_CONF_PRIVATE" "$SLURM_CONF_SYSTEM"; then
        if [[ -f $SLURM_CONF_SYSTEM ]] && ! grep -q 'slurm-dev-cluster.sh' "$SLURM_CONF_SYSTEM"; then
            log "keeping a copy of the existing $SLURM_CONF_SYSTEM as $SLURM_CONF_SYSTEM.orig"
            cp -n "$SLURM_CONF_SYSTEM" "$SLURM_CONF_SYSTEM.orig"
        fi
        install -m 644 "$SLURM_CONF_PRIVATE" "$SLURM_CONF_SYSTEM"
    fi
}

# ---------------------------------------------------------------- daemons

STARTED=0 # set when anything had to be started: then the smoke test runs

start_munge() {
    if pid_alive "$MUNGE_PIDFILE" munged && munge_ok; then return 0; fi
    if munge_ok; then
        log "munge already works (started elsewhere); using it"
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    chmod 700 /var/lib/munge /var/log/munge
    log "starting munged"
    STARTED=1
    # --force: start even if a stale socket from a killed munged is left behind.
    runuser -u munge -- /usr/sbin/munged --force </dev/null >>"$LOG_DIR/munged.out" 2>&1 ||
        { show_log /var/log/munge/munged.log; die "munged failed to start"; }
    wait_for "$T_DAEMON" munge /var/log/munge/munged.log munge_ok
}

start_mariadb() {
    local pidfile=$RUN_DIR/mariadbd.pid dblog=$LOG_DIR/mariadbd.log
    if pid_alive "$pidfile" mariadbd && db_ok; then return 0; fi
    if ! pid_alive "$pidfile" mariadbd; then
        check_port_free "$DB_PORT" "the private MariaDB (set MASKBENCH_SLURM_DB_PORT)"
        if [[ ! -d $DB_DIR/mysql ]]; then
            log "initialising the private MariaDB in $DB_DIR"
            rm -rf "$DB_DIR"
            mkdir -p "$DB_DIR"
            mariadb-install-db --no-defaults --user=root --datadir="$DB_DIR" \
                --auth-root-authentication-method=socket --skip-test-db \
                >"$LOG_DIR/mariadb-install-db.log" 2>&1 ||
                { show_log "$LOG_DIR/mariadb-install-db.log"; die "mariadb-install-db failed"; }
        fi
        log "starting mariadbd on 127.0.0.1:$DB_PORT"
        STARTED=1
        # setsid + redirections: fully detached, holds none of our file descriptors.
        setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DB_DIR" \
            --socket="$DB_SOCK" --pid-file="$pidfile" --log-error="$dblog" \
            --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
            --innodb-use-native-aio=0 --innodb-buffer-pool-size=64M \
            --innodb-lock-wait-timeout=900 \
            </dev/null >>"$LOG_DIR/mariadbd.out" 2>&1 &
    fi
    wait_for "$T_DAEMON" mariadbd "$dblog" db_ok
    # The accounting user and database (idempotent; the password may be new after a wipe).
    mariadb --no-defaults --socket="$DB_SOCK" -uroot <<EOF || { show_log "$dblog"; die "setting up the slurm database user failed"; }
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

# start_slurm_daemon NAME PORT CHECK RESTART: start a SLURM daemon unless its pid file is
# live; restart it if RESTART is 1 (its config changed).
# The daemons fork themselves and write their own pid files; SLURM_CONF points them (and
# slurmdbd, which reads slurmdbd.conf beside it) at the private configs.
start_slurm_daemon() {
    local name=$1 port=$2 check=$3 restart=$4
    local pidfile=$RUN_DIR/$name.pid logfile=$LOG_DIR/$name.log
    if pid_alive "$pidfile" "$name"; then
        if ((restart)); then
            log "configuration changed: restarting $name"
            stop_pidfile "$pidfile" "$name"
        else
            wait_for "$T_DAEMON" "$name" "$logfile" "$check"
            return 0
        fi
    fi
    check_port_free "$port" "$name"
    log "starting $name"
    STARTED=1
    SLURM_CONF=$SLURM_CONF_PRIVATE setsid "/usr/sbin/$name" </dev/null >>"$LOG_DIR/$name.out" 2>&1 ||
        { show_log "$LOG_DIR/$name.out"; show_log "$logfile"; die "$name failed to start"; }
    wait_for "$T_DAEMON" "$name" "$logfile" "$check"
}

register_cluster() {
    if ! grep -qx "$CLUSTER" <<<"$CLUSTERS"; then
        log "registering cluster $CLUSTER with slurmdbd"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
            { show_log "$LOG_DIR/slurmdbd.log"; die "sacctmgr add cluster failed"; }
    fi
}

# Wait until the node takes jobs; resume it once if it is drained or down.
wait_node() {
    local deadline state resumed=0
    deadline=$(($(date +%s) + T_NODE))
    while ! node_ok; do
        state=$(node_state)
        if ((!resumed)) && [[ $state =~ drain|down|fail ]]; then
            log "node $NODE is '$state'; resuming it"
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
            resumed=1
        fi
        if (($(date +%s) >= deadline)); then
            printf 'slurm-dev-cluster: ERROR: node %s is "%s", not idle, after %s s\n' \
                "$NODE" "$state" "$T_NODE" >&2
            timeout 5 scontrol show node "$NODE" >&2 || true
            show_log "$LOG_DIR/slurmd.log"
            show_log "$LOG_DIR/slurmctld.log"
            exit 1
        fi
        sleep 0.2
    done
}

# Submit `true` and wait until the accounting database says COMPLETED.
smoke_test() {
    local id state="" deadline
    id=$(sbatch --parsable --job-name=smoke --output=/dev/null --chdir="$STATE_DIR/jobs" \
        --time=1 --wrap true) || die "sbatch of the smoke test failed"
    id=${id%%;*}
    deadline=$(($(date +%s) + T_SMOKE))
    while :; do
        state=$(sacct -n -X -P -o State -j "$id" 2>/dev/null | head -n 1 || true)
        [[ $state == COMPLETED ]] && break
        if [[ $state =~ FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY ]] ||
            (($(date +%s) >= deadline)); then
            printf 'slurm-dev-cluster: ERROR: smoke-test job %s is "%s" (squeue: %s)\n' "$id" \
                "$state" "$(squeue -h -j "$id" -o %T 2>/dev/null || true)" >&2
            show_log "$LOG_DIR/slurmctld.log"
            show_log "$LOG_DIR/slurmd.log"
            exit 1
        fi
        sleep 0.2
    done
    log "smoke test: job $id COMPLETED"
}

# ---------------------------------------------------------------- subcommands

cmd_start() {
    local t0
    t0=$(now)
    [[ $(id -u) == 0 ]] || die "run as root"
    [[ $CPUS =~ ^[1-9][0-9]*$ ]] || die "MASKBENCH_SLURM_CPUS must be a positive integer"
    [[ $DB_PORT =~ ^[1-9][0-9]*$ ]] || die "MASKBENCH_SLURM_DB_PORT must be a port number"
    # The path goes into config files unquoted: absolute, no white space.
    [[ $STATE_DIR == /* && $STATE_DIR != *[[:space:]]* ]] ||
        die "MASKBENCH_SLURM_DIR must be an absolute path without spaces: '$STATE_DIR'"
    mkdir -p "$LOG_DIR"
    install_packages
    write_configs
    start_munge
    start_mariadb
    start_slurm_daemon slurmdbd 6819 slurmdbd_ok "$DBD_CONF_CHANGED"
    register_cluster
    start_slurm_daemon slurmctld 6817 slurmctld_ok "$SLURM_CONF_CHANGED"
    start_slurm_daemon slurmd 6818 true "$SLURM_CONF_CHANGED"
    wait_node
    if ((STARTED)); then
        smoke_test
        log "cluster $CLUSTER up ($CPUS CPUs on $NODE, partition debug); start took $(elapsed "$t0") s"
    else
        log "cluster $CLUSTER already up and healthy; check took $(elapsed "$t0") s"
    fi
}

cmd_stop() {
    local t0
    t0=$(now)
    # Reverse start order; only processes named by our pid files.
    stop_pidfile "$RUN_DIR/slurmd.pid" slurmd
    stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
    stop_pidfile "$RUN_DIR/slurmdbd.pid" slurmdbd
    stop_pidfile "$RUN_DIR/mariadbd.pid" mariadbd
    stop_pidfile "$MUNGE_PIDFILE" munged
    log "stopped; stop took $(elapsed "$t0") s (state kept in $STATE_DIR)"
}

cmd_status() {
    local ok=0 line
    show() { # show NAME PIDFILE CHECK
        if pid_alive "$2" "$1" && "$3"; then
            printf '  %-10s up (pid %s)\n' "$1" "$(pid_of "$2")"
        elif pid_alive "$2" "$1"; then
            printf '  %-10s running (pid %s) but not answering\n' "$1" "$(pid_of "$2")"
            ok=1
        else
            printf '  %-10s down\n' "$1"
            ok=1
        fi
    }
    echo "SLURM dev cluster $CLUSTER (state: $STATE_DIR)"
    if ! command -v sinfo >/dev/null || ! command -v munge >/dev/null; then
        echo "  not installed (run: $0 start)"
        return 1
    fi
    show munged "$MUNGE_PIDFILE" munge_ok
    show mariadbd "$RUN_DIR/mariadbd.pid" db_ok
    show slurmdbd "$RUN_DIR/slurmdbd.pid" slurmdbd_ok
    show slurmctld "$RUN_DIR/slurmctld.pid" slurmctld_ok
    show slurmd "$RUN_DIR/slurmd.pid" true
    if slurmctld_ok; then
        echo "sinfo:"
        timeout 5 sinfo 2>&1 | while IFS= read -r line; do echo "  $line"; done
        node_ok || {
            echo "  node $NODE is '$(node_state)', not usable"
            ok=1
        }
    fi
    if ((ok == 0)); then echo "usable: yes"; else echo "usable: no"; fi
    return "$ok"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
