#!/usr/bin/env bash
# The ctest fixture of the object store tests: one Ceph RGW per ctest run,
# in the build tree (scripts/ceph-rgw.sh).
#   rgw_fixture.sh setup DIR    start it; without Ceph installed, write
#                               DIR/skip-reason instead (the tests skip, saying why)
#   rgw_fixture.sh cleanup DIR  stop it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
script="$here/../../scripts/ceph-rgw.sh"
dir=$2
case "$1" in
  setup)
    mkdir -p "$dir"
    rm -f "$dir/skip-reason"
    for b in ceph-mon ceph-osd radosgw radosgw-admin; do
      if ! command -v "$b" >/dev/null; then
        echo "$b is not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common, or scripts/install-deps.sh)" \
          >"$dir/skip-reason"
        cat "$dir/skip-reason"
        exit 0
      fi
    done
    start=$SECONDS
    # A run that was interrupted left its cluster running: this run's replaces it.
    bash "$script" stop "$dir"
    bash "$script" start "$dir"
    echo "Ceph RGW started in $((SECONDS - start)) s"
    ;;
  cleanup) bash "$script" stop "$dir" ;;
  *) echo "usage: $0 setup|cleanup DIR" >&2; exit 2 ;;
esac
