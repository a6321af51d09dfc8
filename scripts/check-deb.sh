#!/usr/bin/env bash
# Checks what a uffdpager .deb holds: the four binaries, the systemd unit
# (naming the packaged binary), the documentation, the maintainer scripts,
# its version, and a Depends that names the package of every shared library
# the binaries load (as dpkg-shlibdeps computed it).
#   scripts/check-deb.sh [--host] FILE.deb           check a package
#   scripts/check-deb.sh [--host] --build BUILD_DIR  package BUILD_DIR with cpack (into a temporary
#                                                    directory) and check that
# --host: the package is for hosts: it installs under /usr and names no path
# of the build tree (configure with -DCMAKE_INSTALL_PREFIX=/usr
# -DUFFDPAGER_INSTALLED_DEFAULTS=ON).
set -euo pipefail
host=0
if [ "${1:-}" = --host ]; then host=1; shift; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "${1:-}" = --build ]; then
  build=$(realpath "${2:?usage: check-deb.sh [--host] --build BUILD_DIR}")
  (cd "$work" && cpack --config "$build/CPackConfig.cmake" -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) ||
    { cat "$work/cpack.log"; echo "FAIL: cpack"; exit 1; }
  deb=$(ls "$work"/out/*.deb)
  version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build/CPackConfig.cmake")
else
  deb=$(realpath "${1:?usage: check-deb.sh [--host] FILE.deb | --build BUILD_DIR}")
  version=""
fi
fail() { echo "FAIL: $(basename "$deb"): $*"; exit 1; }

info=$(dpkg-deb -I "$deb")
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = uffdpager ] || fail "Package is '$(field Package)'"
if [ -n "$version" ]; then
  [[ "$(field Version)" == "$version"-* ]] || fail "Version $(field Version) is not the project's $version-REVISION"
fi
for script in postinst postrm; do
  grep -q " $script" <<<"$info" || fail "no $script"
done

contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
unit_path=$(grep '/lib/systemd/system/uffd-pager@.service$' <<<"$contents" || true)
[ -n "$unit_path" ] || fail "no lib/systemd/system/uffd-pager@.service"
prefix=${unit_path#./}; prefix=/${prefix%/lib/systemd/system/uffd-pager@.service}
if ((host)) && [ "$prefix" != /usr ]; then fail "installs under $prefix, not /usr"; fi
for f in bin/uffd-pager bin/pagerctl bin/snapctl bin/tinyvmm \
  share/doc/uffdpager/README.md share/doc/uffdpager/control-api.md share/doc/uffdpager/architecture.md; do
  grep -qx ".$prefix/$f" <<<"$contents" || fail "no $prefix/$f"
done

dpkg-deb -x "$deb" "$work/root"
grep -q "^ExecStart=$prefix/bin/uffd-pager " "$work/root$prefix/lib/systemd/system/uffd-pager@.service" ||
  fail "the unit's ExecStart does not name $prefix/bin/uffd-pager"
if ((host)) && [ -n "${build:-}" ] && grep -rlF "$build" "$work/root" >"$work/leaks"; then
  fail "files name the build tree $build: $(tr '\n' ' ' <"$work/leaks")"
fi

# Depends: every package that provides a library the binaries load.
depends=$(field Depends)
[ -n "$depends" ] || fail "no Depends"
depends_names=$(tr ',|' '\n\n' <<<"$depends" | sed 's/(.*//; s/ //g')
owner() {  # the Debian package of library path $1 (merged /usr: try both spellings)
  local p=$1 q
  q=$(realpath "$p")
  for cand in "$p" "$q" "/usr${q#/usr}" "${q#/usr}"; do
    local found
    found=$(dpkg -S "$cand" 2>/dev/null | head -n1 | cut -d: -f1)
    if [ -n "$found" ]; then echo "$found"; return 0; fi
  done
  return 1
}
# The libraries each binary names (DT_NEEDED), where the loader finds them.
needed=$(for b in "$work/root$prefix"/bin/*; do
  objdump -p "$b" | awk '$1 == "NEEDED" {print $2}' | while read -r soname; do
    ldd "$b" | awk -v so="$soname" '$1 == so && $3 ~ /^\// {print $3}'
  done
done | sort -u)
[ -n "$needed" ] || fail "found no shared library the binaries load"
for lib in $needed; do
  pkg=$(owner "$lib") || fail "no package owns $lib"
  # Depends may name the package or a virtual package it provides.
  names="$pkg $(dpkg-query -W -f '${Provides}' "$pkg" 2>/dev/null | sed 's/([^)]*)//g; s/,/ /g')"
  ok=0
  for name in $names; do grep -qxF "$name" <<<"$depends_names" && ok=1; done
  ((ok)) || fail "Depends lacks $pkg (for $lib): $depends"
done
echo "ok: $(basename "$deb"): Version $(field Version), $(wc -l <<<"$contents") entries under $prefix, Depends: $depends"
