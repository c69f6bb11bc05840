#!/usr/bin/env bash
# Build busybox's udhcpc6 (a DHCPv6 client, a test peer) from Debian's own busybox source:
# Debian's busybox packages are built without it.  A minimal busybox (allnoconfig + udhcpc6)
# that works when invoked as "udhcpc6".
#
#   tests/peers/build_udhcpc6.sh [DIR]    installs DIR/udhcpc6 (default: .venv/bin, so a
#                                         clean clone, or `make clean`, rebuilds it) and
#                                         DIR/udhcpc6-static, the same but CONFIG_STATIC=y,
#                                         for the qemu guest's initramfs (tests/guest/image.py)
#
# Idempotent: builds only the ones not already there.  Needs curl, bzip2, gcc, libc6-dev (its
# static libc.a too) and make (the Makefile's DEBS).  About 10 s each.
set -euo pipefail

VERSION=1.35.0
URL="http://deb.debian.org/debian/pool/main/b/busybox/busybox_${VERSION}.orig.tar.bz2"
SHA256=faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694

repo="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$repo/.venv/bin}"
names=()
for name in udhcpc6 udhcpc6-static; do
  if [ -x "$dir/$name" ]; then
    echo "udhcpc6: $dir/$name is already built"
  else
    names+=("$name")
  fi
done
[ "${#names[@]}" -gt 0 ] || exit 0

work="$(mktemp -d "${TMPDIR:-/tmp}/udhcpc6-build.XXXXXX")"
trap 'rm -rf "$work"; rm -f "$dir"/udhcpc6*.tmp.$$' EXIT

echo "udhcpc6: downloading busybox $VERSION from Debian"
curl -fsS --retry 3 --connect-timeout 20 --max-time 300 -o "$work/busybox.tar.bz2" "$URL"
echo "$SHA256  $work/busybox.tar.bz2" | sha256sum -c --quiet -

jobs="$(nproc 2>/dev/null || echo 2)"
mkdir -p "$dir"
for name in "${names[@]}"; do
  options="FEATURE_IPV6 UDHCPC6 FEATURE_UDHCPC6_RFC3646"
  [ "$name" = udhcpc6-static ] && options="$options STATIC"
  echo "udhcpc6: building $name"
  src="$work/$name"  # a source tree each: the two configurations never share objects
  mkdir "$src"
  tar -xjf "$work/busybox.tar.bz2" -C "$src" --strip-components=1
  (
    cd "$src"
    unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES  # run from the Makefile: not its settings
    make -s allnoconfig >/dev/null
    for option in $options; do
      sed -i "s/^# CONFIG_$option is not set\$/CONFIG_$option=y/" .config
      grep -qx "CONFIG_$option=y" .config || { echo "udhcpc6: no CONFIG_$option" >&2; exit 1; }
    done
    { yes "" || true; } | make -s oldconfig >/dev/null  # yes dies of SIGPIPE: not a failure
    make -s -j"$jobs" busybox >/dev/null
  )
  dest="$dir/$name"
  install -m 0755 "$src/busybox" "$dest.tmp.$$"
  # it runs, as "udhcpc6" (--help has no usage text to print in this build): any exit but
  # the shell's 126/127 for a binary that does not load
  rc=0
  (exec -a udhcpc6 "$dest.tmp.$$" --help) >/dev/null 2>&1 || rc=$?
  if [ "$rc" -ge 126 ]; then
    echo "udhcpc6: $name does not run (exit $rc)" >&2
    exit 1
  fi
  if [ "$name" = udhcpc6-static ]; then
    headers="$(LC_ALL=C readelf -lW "$dest.tmp.$$")"  # (binutils, which gcc brings)
    if [[ "$headers" == *INTERP* ]]; then
      echo "udhcpc6: $name is not static" >&2  # the guest has no ld.so and no libc
      exit 1
    fi
  fi
  mv -f "$dest.tmp.$$" "$dest"
  echo "udhcpc6: installed $dest"
done
