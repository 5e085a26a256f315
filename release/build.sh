#!/usr/bin/env bash
# The release artifacts, built the way a release is: the Linux binary (x86_64, glibc) and
# dbmirror.exe (x86_64 Windows, cross-built by windows/build.sh), both release builds with
# the default features (so `dbmirror demo` works out of the box), stripped, into dist/ with
# their SHA-256 sums. Prints each artifact's size.
#
#   release/build.sh            # both
#   TARGETS=linux release/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS="${TARGETS:-linux windows}"
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)"
rm -rf dist
mkdir -p dist
for target in $TARGETS; do
  case "$target" in
    linux)
      cargo build --release --quiet --bin dbmirror
      out="dist/dbmirror-$version-x86_64-linux"
      cp target/release/dbmirror "$out"
      strip "$out"
      ;;
    windows)
      PROFILE=release CLIPPY=0 windows/build.sh >/dev/null
      out="dist/dbmirror-$version-x86_64-windows.exe"
      cp target/windows/x86_64-pc-windows-gnu/release/dbmirror.exe "$out"
      x86_64-w64-mingw32-strip "$out"
      ;;
    *) echo "unknown target $target (linux, windows)" >&2; exit 1 ;;
  esac
done
(cd dist && sha256sum -- * >SHA256SUMS)
for f in dist/dbmirror-*; do
  awk -v f="$f" -v b="$(stat -c %s "$f")" 'BEGIN { printf "%-44s %6.1f MB\n", f, b / 1048576 }'
done
