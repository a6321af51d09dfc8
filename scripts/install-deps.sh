#!/usr/bin/env bash
# Installs every build and test dependency from Debian 12's archive.
# Each package is a deliberate choice; see "Dependencies" in README.md.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libmicrohttpd-dev      # HTTP/1.1 server on our own Unix listening socket
  libcurl4-openssl-dev   # HTTP client over a Unix socket (CURLOPT_UNIX_SOCKET_PATH)
  nlohmann-json3-dev     # JSON bodies and the handshake payload
  libcli11-dev           # command-line parsing
  libspdlog-dev libfmt-dev  # logging and formatting
  libgtest-dev libgmock-dev # tests
  libbenchmark-dev       # benchmarks
  liburing-dev           # asynchronous backing reads (io_uring)
  libxxhash-dev          # XXH3 checksums of compact working-set files
  libsystemd-dev         # sd_notify readiness, status and watchdog
  clang                  # libFuzzer targets and the thread-safety analysis (scripts/fuzz.sh)
  clang-format           # the style check (scripts/check-format.sh)
  util-linux procps      # setarch (TSan runs), pgrep/ps in tests
  python3-matplotlib     # scripts/plot-benchmarks.py: SVG plots of the benchmarks' JSON (run by hand)
  dpkg-dev               # dpkg-shlibdeps: the .deb's Depends (CPack)
  systemd                # systemd-analyze verify of the unit (ctest -L packaging)
  ceph-mon ceph-osd radosgw ceph-common  # a real S3 store for the object store tests (scripts/ceph-rgw.sh)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "dependencies installed"
