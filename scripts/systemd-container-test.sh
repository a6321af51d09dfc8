#!/usr/bin/env bash
# The unit under real systemd: builds the .deb (build-deb/), boots a Debian 12
# container with systemd as PID 1 (systemd-nspawn), installs the package in it
# and checks, with a tinyvmm guest restored through the pager:
#   1. uffd-pager@v1 becomes active (Type=notify: READY=1 once control.sock answers);
#   2. a VM restored through a session is served;
#   3. kill -9 of the pager: systemd restarts it, the fd store gives the
#      session back, the guest runs on;
#   4. installing a newer package (the same build as Debian revision 2)
#      restarts nothing; uffd-pager@v2 started with --take-over v1 takes the
#      session and v1 exits;
#   5. complete + drain: v2 exits by itself, `systemctl stop` is then a no-op,
#      and the guest runs on without a pager;
# and after 3, 4 and 5 the guest's memory is exactly what the guest model
# computes from the snapshot (`tinyvmm --verify`), so nothing was lost or
# served wrong.
#
#   sudo scripts/systemd-container-test.sh
#
# Needs root, /dev/kvm, /dev/userfaultfd and the network (debootstrap); it
# installs debootstrap and systemd-container itself if they are missing. The
# Debian root (about 250 MiB) is cached under $UFFDPAGER_NSPAWN_CACHE
# (default /var/cache/uffdpager-nspawn), keyed by month, mirror and package
# list; each run boots a throw-away copy of it. README.md, "The unit under real
# systemd", has the timings.
set -euo pipefail

if [ "${1:-}" = --inside ]; then
  inside=1
else
  inside=0
fi

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
die() {
  log "FAIL: $*"
  exit 1
}

# ---------------------------------------------------------------------------
# Inside the container (run through nsenter by the host part below).
# ---------------------------------------------------------------------------
if ((inside)); then
  export PATH=/usr/sbin:/usr/bin:/sbin:/bin
  snap=/srv/uffdpager-test
  rm -rf "$snap"
  mkdir -p "$snap"
  api() { curl -sS --fail-with-body --unix-socket "$1" -X "$2" "http://x$3" ${4:+-H 'Content-Type: application/json' -d "$4"}; }
  steps() { api "$1" GET /tinyvmm/guest | jq '[.vcpus[].step] | min'; }
  wait_steps() {  # SOCKET STEPS: every vCPU reaches STEPS within 60 s
    for _ in $(seq 600); do
      [ "$(steps "$1")" -ge "$2" ] && return 0
      sleep 0.1
    done
    die "guest on $1 stuck at step $(steps "$1") (wanted $2): $(api "$1" GET /)"
  }
  start_vmm() {  # NAME: a tinyvmm with its API on $snap/NAME.sock
    setsid tinyvmm --api-sock "$snap/$1.sock" --id "$1" --mem-hole-start-mib 16 --mem-hole-size-mib 16 \
      >"$snap/$1.log" 2>&1 </dev/null &
    echo $! >"$snap/$1.pid"
    for _ in $(seq 100); do
      api "$snap/$1.sock" GET / >/dev/null 2>&1 && return 0
      sleep 0.1
    done
    die "tinyvmm $1 did not answer: $(cat "$snap/$1.log")"
  }
  # Pauses the guest, writes a Full snapshot NAME and checks it against the
  # model from s1 (the snapshot the pager serves), then resumes.
  verify_against_s1() {
    api "$snap/vm1.sock" PATCH /vm '{"state":"Paused"}'
    api "$snap/vm1.sock" PUT /snapshot/create \
      "{\"snapshot_path\":\"$snap/$1.state\",\"mem_file_path\":\"$snap/$1.mem\"}"
    tinyvmm --verify "$snap/s1.state" "$snap/s1.mem" "$snap/$1.state" "$snap/$1.mem" ||
      die "the guest's memory after $2 is not what the model computes from the snapshot"
    log "ok: after $2 the guest's memory is exactly the model's (tinyvmm --verify s1 -> $1)"
    rm -f "$snap/$1.mem"
    api "$snap/vm1.sock" PATCH /vm '{"state":"Resumed"}'
  }
  main_pid() { systemctl show -P MainPID "uffd-pager@$1.service"; }
  session_field() {  # KEY FIELD: field of session vm1 in pager KEY
    UFFDPAGER_VERSION_KEY=$1 pagerctl --json show vm1 | jq -r ".$2"
  }

  log "package: $(dpkg-query -W -f '${Package} ${Version}' uffdpager 2>/dev/null || echo none)"
  dpkg -i /share/debs/uffdpager_*-1_*.deb >/dev/null
  log "installed $(dpkg-query -W -f '${Package} ${Version}' uffdpager)"
  systemctl cat uffd-pager@.service >/dev/null

  # 1. Readiness.
  t0=$(date +%s%N)
  systemctl start uffd-pager@v1.service
  [ "$(systemctl is-active uffd-pager@v1.service)" = active ] || die "uffd-pager@v1 is not active"
  log "ok: uffd-pager@v1 active; systemctl start returned after READY=1 in $((($(date +%s%N) - t0) / 1000000)) ms; status: $(systemctl show -P StatusText uffd-pager@v1.service)"
  UFFDPAGER_VERSION_KEY=v1 pagerctl health
  # The sandbox took: four capabilities (CHOWN 0, DAC_READ_SEARCH 2, FOWNER 3,
  # KILL 5: 0x2d), no new privileges, / read-only.
  status=/proc/$(main_pid v1)/status
  [ "$(awk '/^CapBnd:/ {print $2}' "$status")" = 000000000000002d ] || die "bounding set: $(grep Cap "$status")"
  [ "$(awk '/^NoNewPrivs:/ {print $2}' "$status")" = 1 ] || die "NoNewPrivs is not set"
  nsenter -t "$(main_pid v1)" -m sh -c 'touch /usr/uffdpager-probe 2>/dev/null' && die "the pager can write /usr"
  [ -n "$(ls -A /root)" ] && [ -z "$(nsenter -t "$(main_pid v1)" -m ls -A /root 2>/dev/null)" ] ||
    die "the pager sees /root"
  log "ok: sandboxed: CapBnd 0x2d (CHOWN DAC_READ_SEARCH FOWNER KILL), NoNewPrivs 1, /usr read-only, /root empty"

  # 2. A VM served: boot a guest, snapshot it, restore it through a session.
  start_vmm src
  api "$snap/src.sock" PUT /machine-config '{"vcpu_count":2,"mem_size_mib":32}'
  api "$snap/src.sock" PUT /actions '{"action_type":"InstanceStart"}'
  wait_steps "$snap/src.sock" 500
  api "$snap/src.sock" PATCH /vm '{"state":"Paused"}'
  api "$snap/src.sock" PUT /snapshot/create "{\"snapshot_path\":\"$snap/s1.state\",\"mem_file_path\":\"$snap/s1.mem\"}"
  kill "$(cat "$snap/src.pid")"
  socket=$(UFFDPAGER_VERSION_KEY=v1 pagerctl --json create --instance-id vm1 --backing "$snap/s1.mem" \
    --kill-on-failure | jq -r .uffd_socket_path)
  start_vmm vm1
  api "$snap/vm1.sock" PUT /snapshot/load "{\"snapshot_path\":\"$snap/s1.state\",\"mem_backend\":{\"backend_type\":\"Uffd\",\"backend_path\":\"$socket\"},\"resume_vm\":true}"
  at=$(steps "$snap/vm1.sock")
  wait_steps "$snap/vm1.sock" $((at + 300))
  [ "$(session_field v1 state)" = serving ] || die "session vm1: $(UFFDPAGER_VERSION_KEY=v1 pagerctl --json show vm1)"
  log "ok: VM restored through session vm1 ($socket), guest at step $(steps "$snap/vm1.sock"), $(UFFDPAGER_VERSION_KEY=v1 pagerctl --json stats | jq -c '{faults, pages_copied}')"

  # 3. kill -9: systemd restarts the pager with the fd store's fds.
  old=$(main_pid v1)
  log "kill -9 $old (systemd 252 does not show the fd store's size; the session's origin tells whether it came back)"
  kill -9 "$old"
  for _ in $(seq 100); do
    new=$(main_pid v1)
    [ "$new" != 0 ] && [ "$new" != "$old" ] && [ "$(systemctl is-active uffd-pager@v1.service)" = active ] && break
    sleep 0.1
  done
  [ "$new" != 0 ] && [ "$new" != "$old" ] || die "uffd-pager@v1 was not restarted: $(systemctl status uffd-pager@v1 --no-pager)"
  state=$(session_field v1 state)
  origin=$(session_field v1 origin)
  [ "$state" = serving ] || die "after the restart session vm1 is $state: $(UFFDPAGER_VERSION_KEY=v1 pagerctl --json show vm1)"
  [[ "$origin" == *recovered* ]] || die "session vm1 did not come back from the fd store (origin \"$origin\")"
  log "ok: restarted as pid $new (NRestarts=$(systemctl show -P NRestarts uffd-pager@v1.service)); session vm1 $state, origin \"$origin\""
  at=$(steps "$snap/vm1.sock")
  wait_steps "$snap/vm1.sock" $((at + 300))
  verify_against_s1 s2 "kill -9 of the pager"

  # 4. A newer package: nothing restarts; v2 takes the session over.
  dpkg -i /share/debs/uffdpager_*-2_*.deb >/dev/null
  log "installed $(dpkg-query -W -f '${Package} ${Version}' uffdpager)"
  [ "$(main_pid v1)" = "$new" ] || die "the upgrade restarted uffd-pager@v1 (its sessions would have been closed)"
  log "ok: the upgrade left uffd-pager@v1 (pid $new) running"
  mkdir -p /etc/uffd-pager
  echo 'UFFD_PAGER_ARGS=--take-over v1' >/etc/uffd-pager/v2.env
  systemctl start uffd-pager@v2.service
  for _ in $(seq 100); do
    [ "$(systemctl is-active uffd-pager@v1.service)" != active ] && break
    sleep 0.1
  done
  [ "$(systemctl is-active uffd-pager@v1.service)" != active ] || die "uffd-pager@v1 still runs after the hand-over"
  state=$(session_field v2 state)
  [ "$state" = serving ] || die "session vm1 in v2 is $state: $(UFFDPAGER_VERSION_KEY=v2 pagerctl --json show vm1)"
  log "ok: uffd-pager@v2 took session vm1 ($state, origin \"$(session_field v2 origin)\"); v1 is $(systemctl is-active uffd-pager@v1.service) ($(systemctl show -P Result uffd-pager@v1.service))"
  at=$(steps "$snap/vm1.sock")
  wait_steps "$snap/vm1.sock" $((at + 300))
  verify_against_s1 s3 "the hand-over to v2"

  # 5. complete, drain, stop: nothing lost.
  UFFDPAGER_VERSION_KEY=v2 pagerctl complete vm1
  UFFDPAGER_VERSION_KEY=v2 pagerctl drain
  for _ in $(seq 100); do
    [ "$(systemctl is-active uffd-pager@v2.service)" != active ] && break
    sleep 0.1
  done
  [ "$(systemctl is-active uffd-pager@v2.service)" != active ] || die "uffd-pager@v2 did not exit after the drain"
  systemctl stop uffd-pager@v2.service
  log "ok: drained: uffd-pager@v2 $(systemctl is-active uffd-pager@v2.service) ($(systemctl show -P Result uffd-pager@v2.service))"
  at=$(steps "$snap/vm1.sock")
  wait_steps "$snap/vm1.sock" $((at + 300))
  verify_against_s1 s4 "complete, drain and stop"
  [ "$(api "$snap/vm1.sock" GET / | jq .stalled)" = false ] || die "the guest stalled"
  kill "$(cat "$snap/vm1.pid")"
  log "journal of the pagers:"
  journalctl -o short-monotonic --no-pager -u 'uffd-pager@*' | tail -n 40
  log "ALL CHECKS PASSED"
  exit 0
fi

# ---------------------------------------------------------------------------
# On the host.
# ---------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, systemd-nspawn)"
for dev in /dev/kvm /dev/userfaultfd; do [ -c "$dev" ] || die "$dev is missing"; done
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${UFFDPAGER_NSPAWN_CACHE:-/var/cache/uffdpager-nspawn}
build=${UFFDPAGER_DEB_BUILD_DIR:-$repo/build-deb}
started=$(date +%s)
phase_start=$started
phase() {
  local now
  now=$(date +%s)
  log "--- $1 took $((now - phase_start)) s"
  phase_start=$now
}

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The package: a tree for hosts (/usr, snapctl naming the installed tools),
# without tests and benchmarks; revision 1, and revision 2 for the upgrade.
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
  -DUFFDPAGER_INSTALLED_DEFAULTS=ON -DBUILD_TESTING=OFF -DUFFDPAGER_WITH_BENCH=OFF "${launcher[@]}" >/dev/null
ninja -C "$build" -j2 >/dev/null
work=$(mktemp -d /var/tmp/uffdpager-nspawn.XXXXXX)
nspawn_pid=""
cleanup() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid" 2>/dev/null || true  # the container powers off
    for _ in $(seq 150); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$nspawn_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/share/debs"
for release in 1 2; do
  (cd "$work" && UFFDPAGER_DEB_RELEASE=$release cpack --config "$build/CPackConfig.cmake" -G DEB \
    -B "$work/cpack" >/dev/null)
  mv "$work"/cpack/*.deb "$work/share/debs/"
done
for deb in "$work"/share/debs/*.deb; do bash "$repo/scripts/check-deb.sh" --host "$deb"; done
phase "building the package"

# The Debian root, cached: systemd, and the package's Depends (so dpkg -i
# works offline in the container), curl and jq for the checks.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
deps=$(dpkg-deb -f "$(ls "$work"/share/debs/*-1_*.deb)" Depends | tr ',' '\n' | sed 's/[|(].*//; s/ //g' | grep . | sort -u)
# debootstrap takes real packages only: a virtual one (libspdlog1.10-fmt9)
# becomes the host's package that provides it.
real_package() {
  [ "$(dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null)" = installed ] && { echo "$1"; return 0; }
  dpkg-query -W -f '${Package} ${Provides}\n' | tr -d , |
    awk -v want="$1" '{for (i = 2; i <= NF; i++) if ($i == want) {print $1; exit}}'
}
deps=$(for d in $deps; do real_package "$d"; done | sort -u)
include=$(echo systemd systemd-sysv dbus curl jq $deps | tr ' ' ',')
key=$(date +%Y%m)-$(echo "$mirror $include" | sha256sum | cut -c1-12)
base=$cache/bookworm-$key
if [ ! -d "$base" ]; then
  log "making the Debian root $base (debootstrap from $mirror)"
  mkdir -p "$cache"
  rm -rf "$base.tmp"
  debootstrap --variant=minbase --include="$include" bookworm "$base.tmp" "$mirror" >"$cache/debootstrap-$key.log" 2>&1 ||
    { tail -n 20 "$cache/debootstrap-$key.log"; die "debootstrap failed"; }
  rm -rf "$base.tmp"/var/cache/apt/archives/*.deb
  mv "$base.tmp" "$base"
  phase "debootstrap (cold cache)"
else
  log "cached Debian root: $base"
fi
cp -a --reflink=auto "$base" "$work/root"
cp "$0" "$work/share/systemd-container-test.sh"
phase "copying the root"

# Boot it. --register=no --keep-unit: no machined or host systemd needed.
systemd-nspawn -D "$work/root" --boot --register=no --keep-unit --machine=uffdpager-test \
  --bind=/dev/kvm --bind=/dev/userfaultfd --bind-ro="$work/share:/share" \
  >"$work/console.log" 2>&1 </dev/null &
nspawn_pid=$!
leader=""
for _ in $(seq 300); do
  for p in $(pgrep -P "$nspawn_pid" 2>/dev/null); do
    [ "$(awk '/^NSpid:/ {print $NF}' "/proc/$p/status" 2>/dev/null)" = 1 ] && leader=$p
  done
  [ -n "$leader" ] && break
  kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/console.log"; die "systemd-nspawn exited"; }
  sleep 0.1
done
[ -n "$leader" ] || { cat "$work/console.log"; die "no container init under systemd-nspawn (pid $nspawn_pid)"; }
in_container() { nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb "$@"; }
# Until systemd has its private socket, systemctl cannot connect.
booted=""
for _ in $(seq 120); do
  booted=$(in_container timeout 120 systemctl is-system-running --wait 2>/dev/null || true)
  [ -n "$booted" ] && break
  sleep 0.5
done
log "container booted (init pid $leader on the host): $booted"
[ "$booted" = running ] || [ "$booted" = degraded ] || { cat "$work/console.log"; die "the container did not boot"; }
[ "$booted" = running ] || in_container systemctl --failed --no-pager || true
phase "booting the container"

in_container bash /share/systemd-container-test.sh --inside
phase "the checks in the container"
log "total $(($(date +%s) - started)) s"
