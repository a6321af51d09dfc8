#!/usr/bin/env bash
# Installs a build (cmake --install) into a temporary root and runs
# `systemd-analyze verify` on uffd-pager@.service there, as installed: the
# unit's ExecStart must name the installed binary, and every setting must
# parse (verify reports an unknown value or capability as a warning with exit
# status 0, so any output at all fails this check).
#   scripts/verify-unit.sh BUILD_DIR
# Exit 77 (a skip for ctest) without systemd-analyze.
set -euo pipefail
build=${1:?usage: verify-unit.sh BUILD_DIR}
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze is not installed (package systemd)"
  exit 77
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
DESTDIR=$root cmake --install "$build" >/dev/null
unit=$(find "$root" -name 'uffd-pager@.service' -print -quit)
[ -n "$unit" ] || { echo "FAIL: cmake --install put no uffd-pager@.service under $root"; exit 1; }
# The root needs the targets the unit orders itself against; the host's.
host_units=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
mkdir -p "$root/usr/lib/systemd/system"
cp -a "$host_units"/*.target "$root/usr/lib/systemd/system/"

# The sandbox settings README.md and the unit's comments promise.
for setting in Type=notify NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
  'CapabilityBoundingSet=CAP_CHOWN CAP_FOWNER CAP_KILL CAP_DAC_READ_SEARCH' FileDescriptorStoreMax=65536; do
  grep -qx "$setting" "$unit" || { echo "FAIL: $unit lacks the line $setting"; exit 1; }
done

status=0
out=$(systemd-analyze verify --man=no --root="$root" uffd-pager@verify.service 2>&1) || status=$?
if [ "$status" -ne 0 ] || [ -n "$out" ]; then
  echo "FAIL: systemd-analyze verify (exit $status) on the installed unit:"
  echo "$out"
  exit 1
fi
echo "ok: ${unit#"$root"} passes systemd-analyze verify as installed"
