#!/usr/bin/env bash
# Build busybox's udhcpc6 (a DHCPv6 client, a test peer) from Debian's own busybox source:
# Debian's busybox packages are built without it.  A minimal busybox (allnoconfig + udhcpc6)
# that works when invoked as "udhcpc6".
#
#   tests/peers/build_udhcpc6.sh [DIR]    installs DIR/udhcpc6 (default: .venv/bin, so a
#                                         clean clone, or `make clean`, rebuilds it)
#
# Idempotent: nothing to do when DIR/udhcpc6 is already there.  Needs curl, bzip2, gcc,
# libc6-dev and make (the Makefile's DEBS).  About 10 s.
set -euo pipefail

VERSION=1.35.0
URL="http://deb.debian.org/debian/pool/main/b/busybox/busybox_${VERSION}.orig.tar.bz2"
SHA256=faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694

repo="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$repo/.venv/bin}"
dest="$dir/udhcpc6"

if [ -x "$dest" ]; then
  echo "udhcpc6: $dest is already built"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/udhcpc6-build.XXXXXX")"
trap 'rm -rf "$work"; rm -f "$dest.tmp.$$"' EXIT

echo "udhcpc6: downloading busybox $VERSION from Debian"
curl -fsS --retry 3 --connect-timeout 20 --max-time 300 -o "$work/busybox.tar.bz2" "$URL"
echo "$SHA256  $work/busybox.tar.bz2" | sha256sum -c --quiet -
tar -xjf "$work/busybox.tar.bz2" -C "$work"
src="$work/busybox-$VERSION"

echo "udhcpc6: building"
jobs="$(nproc 2>/dev/null || echo 2)"
(
  cd "$src"
  unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES  # run from the Makefile: not its settings
  make -s allnoconfig >/dev/null
  for option in FEATURE_IPV6 UDHCPC6 FEATURE_UDHCPC6_RFC3646; do
    sed -i "s/^# CONFIG_$option is not set\$/CONFIG_$option=y/" .config
    grep -qx "CONFIG_$option=y" .config || { echo "udhcpc6: no CONFIG_$option" >&2; exit 1; }
  done
  { yes "" || true; } | make -s oldconfig >/dev/null  # yes dies of SIGPIPE: not a failure
  make -s -j"$jobs" busybox >/dev/null
)

mkdir -p "$dir"
install -m 0755 "$src/busybox" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "udhcpc6: installed $dest"
