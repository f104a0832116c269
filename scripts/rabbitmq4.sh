#!/usr/bin/env bash
# RabbitMQ 4 (Debian 13's 4.0.5 on Erlang 27) for this project's runs and tests, from a minimal
# Debian 13 root built with debootstrap: Debian 13's packages need a newer C library than the
# host's. The node runs as root inside the root on ports of its own, with 4.3's defaults
# (transient non-exclusive queues and global QoS denied), so tests see what users' brokers do.
#
#   rabbitmq4.sh root                 build the root if it is not built yet, mount /proc etc. in it
#   rabbitmq4.sh start [NAME]         start node NAME (default r4) unless it already answers
#   rabbitmq4.sh stop [NAME]          stop node NAME if this script started it
#   rabbitmq4.sh ctl NAME ARGS...     rabbitmqctl against node NAME
#   rabbitmq4.sh with CMD...          start r4, run CMD, stop r4 again if it was started here
#
# Ports of node NAME: r4 uses AMQP 5682, management 15682, distribution 25682. Others pass
# R4_AMQP_PORT, R4_MGMT_PORT, R4_DIST_PORT and optionally R4_EXTRA_CONF (lines appended to
# rabbitmq.conf). The system epmd is shared; node names are NAME@localhost.
set -euo pipefail

ROOT=${RABBITMQ4_ROOT:-/var/lib/heygen-streaming-worker/rabbitmq4-root}
BIN=/usr/lib/rabbitmq/bin
STATE=/var/lib/hsw-nodes # inside the root: one folder per node

mirror() {
  # The Debian mirror this machine already uses (the registries are all it can reach).
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

mounts() {
  local m
  for m in proc sys dev dev/pts; do
    mountpoint -q "$ROOT/$m" && continue
    mkdir -p "$ROOT/$m"
    case $m in
      proc) mount -t proc proc "$ROOT/proc" ;;
      sys) mount -t sysfs sysfs "$ROOT/sys" ;;
      dev) mount --bind /dev "$ROOT/dev" ;;
      dev/pts) mount --bind /dev/pts "$ROOT/dev/pts" ;;
    esac
  done
}

build_root() {
  [ -x "$ROOT$BIN/rabbitmq-server" ] && return 0
  echo ">> building a Debian 13 root with RabbitMQ 4 in $ROOT (about a minute, once per machine)" >&2
  command -v debootstrap >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  mkdir -p "$ROOT"
  [ -x "$ROOT/usr/bin/apt-get" ] ||
    debootstrap --variant=minbase trixie "$ROOT" "$(mirror)" >"$ROOT.debootstrap.log" 2>&1 ||
    { echo "debootstrap failed; see $ROOT.debootstrap.log" >&2; exit 1; }
  mounts
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
  # The package's own service start cannot run in a chroot; make sure nothing was left behind.
  chroot "$ROOT" env HOME=/root $BIN/rabbitmqctl -q stop >/dev/null 2>&1 || true
  echo ">> RabbitMQ $(chroot "$ROOT" dpkg-query -W -f='${Version}' rabbitmq-server) ready in $ROOT" >&2
}

node_env() {
  # Everything a node or its CLI needs, as `env` arguments (paths are inside the root).
  local name=$1 dir=$STATE/$1
  echo HOME=/root RABBITMQ_NODENAME="$name@localhost" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_PID_FILE="$dir/pid" \
    RABBITMQ_DIST_PORT="${R4_DIST_PORT:-25682}" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="'-kernel inet_dist_use_interface {127,0,0,1}'" \
    RABBITMQ_CTL_DIST_PORT_MIN=0 ERL_EPMD_ADDRESS=127.0.0.1
}

in_root() {
  local name=$1
  shift
  eval "chroot \"$ROOT\" env $(node_env "$name") \"\$@\""
}

ctl() {
  local name=$1
  shift
  in_root "$name" $BIN/rabbitmqctl -n "$name@localhost" "$@"
}

start_node() {
  local name=${1:-r4} dir
  build_root
  mounts
  dir=$ROOT$STATE/$name
  if ctl "$name" -q status >/dev/null 2>&1; then return 0; fi
  mkdir -p "$dir/log" "$dir/mnesia"
  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:${R4_AMQP_PORT:-5682}
management.tcp.port = ${R4_MGMT_PORT:-15682}
management.tcp.ip = 127.0.0.1
loopback_users = none
deprecated_features.permit.transient_nonexcl_queues = false
deprecated_features.permit.global_qos = false
${R4_EXTRA_CONF:-}
EOF
  echo "[rabbitmq_management,rabbitmq_consistent_hash_exchange]." >"$dir/enabled_plugins"
  echo ">> starting RabbitMQ 4 node $name@localhost (AMQP 127.0.0.1:${R4_AMQP_PORT:-5682})" >&2
  in_root "$name" setsid $BIN/rabbitmq-server >"$dir/log/console.log" 2>&1 </dev/null &
  echo $! >"$dir/started-by-script"
  for _ in $(seq 1 120); do
    ctl "$name" -q await_startup --timeout 1 >/dev/null 2>&1 && break
    sleep 0.5
  done
  ctl "$name" -q await_startup --timeout 30 >/dev/null ||
    { echo "RabbitMQ 4 node $name did not start; see $dir/log" >&2; exit 1; }
  for _ in $(seq 1 60); do
    curl -fsS -u guest:guest "http://127.0.0.1:${R4_MGMT_PORT:-15682}/api/overview" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "RabbitMQ 4 management API did not come up on :${R4_MGMT_PORT:-15682}" >&2
  exit 1
}

stop_node() {
  local name=${1:-r4} dir
  dir=$ROOT$STATE/$name
  [ -f "$dir/started-by-script" ] || return 0
  ctl "$name" -q stop >/dev/null 2>&1 || kill "$(cat "$dir/started-by-script")" 2>/dev/null || true
  rm -f "$dir/started-by-script"
}

case ${1:-} in
  root) build_root; mounts ;;
  start) start_node "${2:-r4}" ;;
  stop) stop_node "${2:-r4}" ;;
  ctl) shift; ctl "$@" ;;
  with)
    shift
    already=0
    ctl r4 -q status >/dev/null 2>&1 && already=1
    start_node r4
    rc=0
    "$@" || rc=$?
    [ $already = 1 ] || stop_node r4
    exit $rc
    ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
