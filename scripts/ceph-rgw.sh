#!/usr/bin/env bash
# A real S3 server for development and tests: a single-node Ceph 16 cluster
# (one monitor, one in-memory OSD) with a RADOS Gateway in front of it, all
# under one directory, no systemd, nothing outside DIR touched.
#
#   scripts/ceph-rgw.sh start DIR [PORT]   start it (PORT: RGW's HTTP port, default a free one)
#   scripts/ceph-rgw.sh env DIR            print the exports a client needs (endpoint, region, test user)
#   scripts/ceph-rgw.sh stop DIR           stop what `start DIR` started; idempotent
#
# Why these settings: the OSD keeps objects in memory (`osd objectstore =
# memstore`), so start-up needs no disk format and stop leaves nothing
# behind; one OSD means pool size 1 and a CRUSH rule that picks OSDs, not
# hosts; auth is off because the cluster listens on 127.0.0.1 only and lives
# as long as a test run. S3 authentication (SigV4 with the test user's keys)
# is still enforced by RGW: that is what the client is tested against.
#
# Environment: UFFDPAGER_CEPH_START_TIMEOUT (seconds, default 90) bounds the
# wait for each daemon and each ceph command; UFFDPAGER_CEPH_MEMSTORE_BYTES (default 2 GiB) sizes the OSD.
set -euo pipefail

readonly ACCESS_KEY="UFFDPAGERTESTKEY0001"
readonly SECRET_KEY="uffdpager-test-secret-0123456789abcdefABCD"
readonly REGION="us-east-1"
readonly TIMEOUT="${UFFDPAGER_CEPH_START_TIMEOUT:-90}"
readonly MEMSTORE_BYTES="${UFFDPAGER_CEPH_MEMSTORE_BYTES:-2147483648}"

die() {
  echo "ceph-rgw.sh: $*" >&2
  exit 1
}

# Progress on stderr with the seconds since start: where start-up time goes.
step() {
  echo "ceph-rgw.sh: $1 (${SECONDS}s)" >&2
}

usage() {
  echo "usage: $0 start DIR [PORT] | stop DIR | env DIR" >&2
  exit 2
}

# A TCP port nobody listens on now (the kernel's pick for port 0).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits until "$@" succeeds, at most TIMEOUT seconds; on failure names the log.
wait_until() {
  local what=$1 log=$2
  shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "ceph-rgw.sh: $what did not come up within ${TIMEOUT}s; see $log" >&2
      [ -f "$log" ] && tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
}

# The pid in a daemon's pid file, if that process still runs and is ours:
# its command line names this directory's ceph.conf (a pid reused by an
# unrelated process is left alone).
live_pid() {
  local f=$1 dir=$2 pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$dir/ceph.conf" || return 1
  echo "$pid"
}

cmd_start() {
  local dir=$1 rgw_port=${2:-}
  for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool; do
    command -v "$b" >/dev/null || die "$b not found: install ceph-mon ceph-osd radosgw ceph-common (scripts/install-deps.sh)"
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/rgw.port" ] && live_pid "$dir/run/client.rgw.a.pid" "$dir" >/dev/null; then
    die "already running in $dir (port $(cat "$dir/rgw.port")); stop it first"
  fi
  cmd_stop "$dir" >/dev/null 2>&1 || true
  # A start that fails half-way stops what it started.
  trap 'cmd_stop "$dir" >/dev/null 2>&1 || true' EXIT
  rm -rf "${dir:?}/mon" "$dir/osd" "$dir/run" "$dir/log" "$dir/ceph.conf" "$dir/rgw.port" "$dir/env"
  mkdir -p "$dir/mon" "$dir/osd/ceph-0" "$dir/run" "$dir/log"
  [ -n "$rgw_port" ] || rgw_port=$(free_port)
  [[ "$rgw_port" =~ ^[0-9]+$ ]] && ((rgw_port > 0 && rgw_port < 65536)) || die "PORT must be 1..65535, not '$rgw_port'"
  port_open "$rgw_port" && die "port $rgw_port is already in use"
  local mon_port fsid conf
  mon_port=$(free_port)
  fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
  conf="$dir/ceph.conf"
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
mon initial members = a
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
# No crash reports, core dumps or /var paths from a throwaway cluster.
crash dir = $dir/run/crash
exporter sock dir = $dir/run
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
# Commit monitor changes at once instead of batching them for a second: RGW
# makes six pools at start, each a map change it waits for.
paxos propose interval = 0.01
osd crush chooseleaf type = 0

[mon]
mon data = $dir/mon/\$cluster-\$id

[osd]
osd data = $dir/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd max object name len = 256
osd max object namespace len = 64
# At start an OSD places itself in the CRUSH map with a monitor command; on a
# monitor that has only just formed, that command can go out before the OSD
# knows the cluster's fsid ("wrong fsid", and the OSD exits). We place it
# ourselves before it starts instead.
osd crush update on start = false
osd class update on start = false

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
rgw dns name = 127.0.0.1
# The OSD keeps everything in memory: an object overwritten or deleted must
# give its space back within seconds (RGW's default waits two hours), or a
# benchmark that replaces a 1 GiB object a few times fills the OSD.
rgw gc obj min wait = 5
rgw gc processor period = 5
EOF
  mkdir -p "$dir/rgw" "$dir/run/crash"

  monmaptool --create --clobber --fsid "$fsid" --addv a "[v1:127.0.0.1:$mon_port]" "$dir/run/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/run/monmap" >>"$dir/log/setup.log" 2>&1 ||
    die "ceph-mon --mkfs failed; see $dir/log/setup.log"
  ceph-mon -c "$conf" -i a >>"$dir/log/setup.log" 2>&1 || die "ceph-mon did not start; see $dir/log/mon.a.log"
  # A port check, not `ceph mon stat`: each ceph command costs a second.
  wait_until "ceph-mon" "$dir/log/mon.a.log" port_open "$mon_port" || die "no monitor"
  step "monitor up"

  local osd_uuid
  osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
  # The monitor's port opens before it answers commands: a command that
  # early fails with "EPERM: problem getting command descriptions from mon".
  # `osd new` with the same uuid and id is idempotent, so it is tried again.
  osd_new() { timeout 10 ceph -c "$conf" --connect-timeout 10 osd new "$osd_uuid" 0 >>"$dir/log/setup.log" 2>&1; }
  wait_until "ceph osd new" "$dir/log/setup.log" osd_new || die "ceph osd new failed; see $dir/log/setup.log"
  timeout "$TIMEOUT" ceph -c "$conf" osd crush add osd.0 1.0 root=default >>"$dir/log/setup.log" 2>&1 ||
    die "ceph osd crush add failed; see $dir/log/setup.log"
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/setup.log" 2>&1 ||
    die "ceph-osd --mkfs failed; see $dir/log/setup.log and $dir/log/osd.0.log"
  ceph-osd -c "$conf" -i 0 >>"$dir/log/setup.log" 2>&1 || die "ceph-osd did not start; see $dir/log/osd.0.log"
  wait_until "ceph-osd" "$dir/log/osd.0.log" bash -c "timeout 10 ceph -c '$conf' osd dump 2>/dev/null | grep -q '^osd.0 up'" ||
    die "no OSD"
  step "OSD up"

  radosgw -c "$conf" -n client.rgw.a >>"$dir/log/setup.log" 2>&1 || die "radosgw did not start; see $dir/log/client.rgw.a.log"
  wait_until "radosgw" "$dir/log/client.rgw.a.log" curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$rgw_port/" ||
    die "no RGW"
  step "RGW answers"
  timeout "$TIMEOUT" radosgw-admin -c "$conf" user create --uid uffdpager-test --display-name "uffdpager test" \
    --access-key "$ACCESS_KEY" --secret "$SECRET_KEY" >>"$dir/log/setup.log" 2>&1 ||
    die "radosgw-admin user create failed; see $dir/log/setup.log"
  echo "$rgw_port" >"$dir/rgw.port"
  write_env "$dir" >"$dir/env"
  trap - EXIT
  echo "RGW listening on http://127.0.0.1:$rgw_port (logs in $dir/log)" >&2
}

write_env() {
  local dir=$1
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$dir/rgw.port")"
  echo "export AWS_REGION=$REGION"
  echo "export AWS_ACCESS_KEY_ID=$ACCESS_KEY"
  echo "export AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
}

cmd_env() {
  local dir=$1
  [ -f "$dir/rgw.port" ] || die "nothing started in $dir (scripts/ceph-rgw.sh start $dir)"
  write_env "$dir"
}

# Stops each daemon whose pid file is under DIR, with SIGKILL: the cluster
# keeps everything in memory and is thrown away, and a polite TERM costs
# about 2 s per daemon (each waits on the others to say goodbye), 7 s of
# every test run. Waits until they are gone.
cmd_stop() {
  local dir=$1 f pid pids=()
  [ -d "$dir/run" ] || return 0
  dir=$(cd "$dir" && pwd)
  for f in "$dir/run/client.rgw.a.pid" "$dir/run/osd.0.pid" "$dir/run/mon.a.pid"; do
    pid=$(live_pid "$f" "$dir") && pids+=("$pid") && kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done
  rm -f "$dir/run/client.rgw.a.pid" "$dir/run/osd.0.pid" "$dir/run/mon.a.pid" "$dir/rgw.port" "$dir/env"
}

(($# >= 2)) || usage
case "$1" in
  start) (($# <= 3)) || usage; cmd_start "$2" "${3:-}" ;;
  stop) (($# == 2)) || usage; cmd_stop "$2" ;;
  env) (($# == 2)) || usage; cmd_env "$2" ;;
  *) usage ;;
esac
