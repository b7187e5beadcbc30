# shellcheck shell=bash
# Throwaway PostgreSQL + Redis for boxoffice's tests and benchmarks.
#
# Meant to be sourced, not executed:
#
#   source "$(dirname "$0")/lib/services.sh"
#   start_services            # or: start_services "boxoffice bench"
#
# start_services (call it in the current shell, never in a subshell or `$(...)`):
#   - installs redis-server / postgresql with apt-get when missing,
#   - makes a temp dir, picks two free loopback ports,
#   - initdb + starts PostgreSQL (as the `postgres` OS user when running as
#     root) and starts Redis, waiting until both answer,
#   - starts a throwaway Redis Cluster (3 primaries + 3 replicas on six more
#     loopback ports, `redis-cli --cluster create`) and waits until every
#     node says cluster_state:ok,
#   - exports BOXOFFICE_TEST_DATABASE_URL, BOXOFFICE_TEST_REDIS_URL,
#     BOXOFFICE_TEST_REDIS_CLUSTER_NODES (comma-separated redis:// URLs of the
#     cluster's nodes) and BOXOFFICE_SERVICES_DIR (the temp dir; callers may
#     put files there),
#   - installs EXIT/INT/TERM traps that stop both services and remove the
#     temp dir, preserving the script's exit code (INT -> 130, TERM -> 143).
# The optional argument is the label used in section headers (default
# "boxoffice tests"). On failure it prints an error and exits the caller.
# PostgreSQL runs without fsync and synchronous commits (fast tests) unless
# BOXOFFICE_SERVICES_DURABLE=1 (the benchmark: its write paths are measured
# with commits as durable as a real deployment's).
#
# Everything internal is prefixed _svc_ / _SVC_ to stay out of the caller's way.

_svc_log() { printf '%s\n' "$*"; }
_svc_die() { printf '%s: error: %s\n' "$0" "$*" >&2; exit 1; }
_svc_section() { printf '\n== %s ==\n' "$*"; }

_svc_is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Run a command as root (directly, or via sudo when available).
_svc_as_root() {
  if _svc_is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    _svc_die "need root (or sudo) to run: $*"
  fi
}

_SVC_APT_UPDATED=0
_svc_apt_install() {
  command -v apt-get >/dev/null 2>&1 || _svc_die "apt-get not found; please install: $*"
  if [[ $_SVC_APT_UPDATED -eq 0 ]]; then
    _svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      || _svc_die "apt-get update failed"
    _SVC_APT_UPDATED=1
  fi
  _svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" \
    || _svc_die "apt-get install $* failed"
}

# Directory holding initdb, pg_ctl, postgres, pg_isready (highest version wins).
_svc_find_pg_bin() {
  local dir
  dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
    printf '%s\n' "$dir"
    return 0
  fi
  if command -v pg_ctl >/dev/null 2>&1; then
    dir="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
    if [[ -x "$dir/initdb" && -x "$dir/postgres" ]]; then
      printf '%s\n' "$dir"
      return 0
    fi
  fi
  return 1
}

# Prefer the tool next to the server binaries, fall back to PATH.
_svc_pg_tool() {
  if [[ -x "$_SVC_PG_BIN/$1" ]]; then printf '%s\n' "$_SVC_PG_BIN/$1"; else command -v "$1"; fi
}

_SVC_PG_BIN=""
_SVC_TMP_DIR=""
_SVC_PG_ROOT=""
_SVC_PG_STARTED=0
_SVC_REDIS_PID=""
_SVC_CLUSTER_PIDS=()
_SVC_STARTED=0

# PostgreSQL refuses to run as root: run its tools as the postgres OS user then.
_svc_as_pg() {
  if _svc_is_root; then
    (cd "$_SVC_PG_ROOT" && runuser -u postgres -- "$@")
  else
    (cd "$_SVC_PG_ROOT" && "$@")
  fi
}

# EXIT trap: stop both services, remove the temp dir, keep the exit code.
_svc_cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ $_SVC_PG_STARTED -eq 1 ]]; then
    _svc_as_pg "$_SVC_PG_BIN/pg_ctl" -D "$_SVC_PG_ROOT/data" -m immediate -w -t 30 stop >/dev/null 2>&1
    # Belt and braces: if the postmaster is somehow still alive, kill it.
    if [[ -f "$_SVC_PG_ROOT/data/postmaster.pid" ]]; then
      local pgpid
      pgpid="$(head -n 1 "$_SVC_PG_ROOT/data/postmaster.pid" 2>/dev/null)"
      [[ -n "$pgpid" ]] && kill -KILL "$pgpid" 2>/dev/null
    fi
  fi
  if [[ -n "$_SVC_REDIS_PID" ]]; then
    kill -TERM "$_SVC_REDIS_PID" 2>/dev/null
    local _i
    for _i in $(seq 1 50); do
      kill -0 "$_SVC_REDIS_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$_SVC_REDIS_PID" 2>/dev/null
    wait "$_SVC_REDIS_PID" 2>/dev/null
  fi
  local _pid
  for _pid in "${_SVC_CLUSTER_PIDS[@]}"; do kill -KILL "$_pid" 2>/dev/null; done
  for _pid in "${_SVC_CLUSTER_PIDS[@]}"; do wait "$_pid" 2>/dev/null; done
  if [[ -n "$_SVC_TMP_DIR" && -d "$_SVC_TMP_DIR" ]]; then
    rm -rf "$_SVC_TMP_DIR"
  fi
  exit "$rc"
}

# n distinct free loopback ports on one line (all sockets held while picking).
_svc_free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# A throwaway Redis Cluster: 3 primaries, 3 replicas, on free loopback ports.
# Exports BOXOFFICE_TEST_REDIS_CLUSTER_NODES. A cluster bus port is the node's
# port + 10000, so node ports are picked below 55536 and retried if taken.
_svc_start_cluster() {
  local ports=() port _i _try node_dir urls=() hosts=()
  for _try in $(seq 1 20); do
    read -r -a ports < <(_svc_free_ports 6) || true
    local ok=1
    for port in "${ports[@]}"; do
      if (( port >= 55536 )) || ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$((port + 10000))" 2>/dev/null; then
        ok=0
      fi
    done
    [[ $ok -eq 1 && ${#ports[@]} -eq 6 ]] && break
    ports=()
  done
  [[ ${#ports[@]} -eq 6 ]] || _svc_die "could not pick ports for the Redis Cluster"
  for port in "${ports[@]}"; do
    node_dir="$_SVC_TMP_DIR/cluster/$port"
    mkdir -p "$node_dir"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --dir "$node_dir" --daemonize no >"$node_dir/redis.log" 2>&1 &
    _SVC_CLUSTER_PIDS+=($!)
    hosts+=("127.0.0.1:$port")
    urls+=("redis://127.0.0.1:$port/")
  done
  for port in "${ports[@]}"; do
    for _i in $(seq 1 100); do
      [[ "$(redis-cli -p "$port" ping 2>/dev/null || true)" == "PONG" ]] && break
      sleep 0.1
    done
  done
  if ! redis-cli --cluster create "${hosts[@]}" --cluster-replicas 1 --cluster-yes \
      >"$_SVC_TMP_DIR/cluster/create.log" 2>&1; then
    cat "$_SVC_TMP_DIR/cluster/create.log" >&2
    _svc_die "redis-cli --cluster create failed"
  fi
  local ready=0
  for _i in $(seq 1 300); do
    ready=1
    for port in "${ports[@]}"; do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ready=0
    done
    [[ $ready -eq 1 ]] && break
    sleep 0.1
  done
  [[ $ready -eq 1 ]] || _svc_die "the Redis Cluster did not reach cluster_state:ok"
  _svc_log "redis cluster: ${hosts[*]} (3 primaries, 3 replicas)"
  BOXOFFICE_TEST_REDIS_CLUSTER_NODES="$(IFS=,; printf '%s' "${urls[*]}")"
  export BOXOFFICE_TEST_REDIS_CLUSTER_NODES
}

# Make $1 (a fresh temp dir) usable by the postgres OS user; sets _SVC_PG_ROOT.
# Returns non-zero if the postgres user still cannot write to its subdir.
_svc_prepare_pg_root() {
  _SVC_PG_ROOT="$1/pg"
  mkdir -p "$_SVC_PG_ROOT" || _svc_die "cannot create $_SVC_PG_ROOT"
  if _svc_is_root; then
    # mktemp makes the dir 0700; the postgres user must be able to traverse it
    # and own its own subdir (data dir, unix socket dir, log).
    if ! { chmod 0711 "$1" && chown postgres: "$_SVC_PG_ROOT" && chmod 0700 "$_SVC_PG_ROOT"; }; then
      _svc_die "cannot set up permissions on $1"
    fi
    runuser -u postgres -- test -w "$_SVC_PG_ROOT"
  fi
}

start_services() {
  local label="${1:-boxoffice tests}"
  [[ $_SVC_STARTED -eq 0 ]] || _svc_die "start_services called twice"
  _SVC_STARTED=1

  # --- prerequisites ---------------------------------------------------------

  _svc_section "$label: checking prerequisites"

  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    _svc_log "redis-server not found; installing it"
    _svc_apt_install redis-server
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
      _svc_die "redis-server/redis-cli still not found after installing redis-server"
    fi
  fi

  if ! _SVC_PG_BIN="$(_svc_find_pg_bin)"; then
    _svc_log "PostgreSQL binaries not found; installing postgresql"
    _svc_apt_install postgresql
    _SVC_PG_BIN="$(_svc_find_pg_bin)" \
      || _svc_die "PostgreSQL binaries still not found after installing postgresql"
  fi

  local pg_isready
  pg_isready="$(_svc_pg_tool pg_isready)" || _svc_die "pg_isready not found"

  command -v python3 >/dev/null 2>&1 || _svc_die "python3 is needed to pick free ports"

  _svc_log "postgres: $_SVC_PG_BIN ($("$_SVC_PG_BIN/postgres" --version))"
  _svc_log "redis:    $(command -v redis-server) ($(redis-server --version | awk '{print $3}'))"

  # --- temp dir, cleanup -----------------------------------------------------

  trap _svc_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  _SVC_TMP_DIR="$(mktemp -d -t boxoffice-test.XXXXXX)" || _svc_die "mktemp failed"
  if _svc_is_root; then
    id postgres >/dev/null 2>&1 \
      || _svc_die "running as root but there is no 'postgres' OS user (PostgreSQL refuses to run as root)"
  fi
  if ! _svc_prepare_pg_root "$_SVC_TMP_DIR"; then
    # e.g. TMPDIR under /root: a parent dir the postgres user cannot traverse.
    rm -rf "$_SVC_TMP_DIR"
    _SVC_TMP_DIR="$(mktemp -d -p /tmp boxoffice-test.XXXXXX)" || _svc_die "mktemp -p /tmp failed"
    _svc_prepare_pg_root "$_SVC_TMP_DIR" \
      || _svc_die "the postgres user cannot write to $_SVC_PG_ROOT"
  fi

  # Two distinct free loopback ports (both sockets held open while picking).
  local pg_port="" redis_port=""
  read -r pg_port redis_port < <(_svc_free_ports 2) || true
  [[ -n "$pg_port" && -n "$redis_port" ]] || _svc_die "could not pick free ports"

  # --- PostgreSQL ------------------------------------------------------------

  _svc_section "$label: starting PostgreSQL on 127.0.0.1:$pg_port and Redis on 127.0.0.1:$redis_port"
  local start_ts=$SECONDS

  if ! _svc_as_pg "$_SVC_PG_BIN/initdb" -D "$_SVC_PG_ROOT/data" --auth=trust -U postgres \
        --encoding=UTF8 --no-locale --no-sync >"$_SVC_PG_ROOT/initdb.log" 2>&1; then
    cat "$_SVC_PG_ROOT/initdb.log" >&2
    _svc_die "initdb failed"
  fi

  _SVC_PG_STARTED=1
  local pg_durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if [[ "${BOXOFFICE_SERVICES_DURABLE:-0}" == "1" ]]; then pg_durability=""; fi
  if ! _svc_as_pg "$_SVC_PG_BIN/pg_ctl" -D "$_SVC_PG_ROOT/data" -l "$_SVC_PG_ROOT/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $_SVC_PG_ROOT $pg_durability -c max_connections=300" \
        start >/dev/null; then
    _svc_log "--- postgres log ---"
    cat "$_SVC_PG_ROOT/postgres.log" >&2 || true
    _svc_die "PostgreSQL did not start"
  fi

  local ready=0 _i
  for _i in $(seq 1 300); do
    if "$pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres; then
      ready=1
      break
    fi
    sleep 0.1
  done
  if [[ $ready -ne 1 ]]; then
    _svc_log "--- postgres log ---"
    cat "$_SVC_PG_ROOT/postgres.log" >&2 || true
    _svc_die "PostgreSQL is not accepting connections on 127.0.0.1:$pg_port after 30s"
  fi

  # --- Redis -----------------------------------------------------------------

  local redis_log="$_SVC_TMP_DIR/redis.log"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$_SVC_TMP_DIR" --daemonize no >"$redis_log" 2>&1 &
  _SVC_REDIS_PID=$!

  ready=0
  for _i in $(seq 1 300); do
    if [[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null || true)" == "PONG" ]]; then
      ready=1
      break
    fi
    kill -0 "$_SVC_REDIS_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ $ready -ne 1 ]]; then
    _svc_log "--- redis log ---"
    cat "$redis_log" >&2 || true
    _svc_die "Redis did not answer PING on 127.0.0.1:$redis_port"
  fi

  _svc_start_cluster

  _svc_log "services up in $((SECONDS - start_ts))s"

  export BOXOFFICE_SERVICES_DIR="$_SVC_TMP_DIR"
  export BOXOFFICE_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/"
  export BOXOFFICE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
}
