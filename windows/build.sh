#!/usr/bin/env bash
# Cross-builds dbmirror.exe for 64-bit Windows (x86_64-pc-windows-gnu) with Debian's packages
# alone: rustc-web and rust-web-src (one source package, so compiler and std sources match;
# std is built from source with -Z build-std), mingw-w64 as linker and C compiler (ring,
# aws-lc-sys, libsqlite3-sys and libmimalloc-sys compile C for the target). Debian's
# compiler is used by absolute path and first in PATH: rustup's toolchain must not be mixed
# with Debian's std.
#
#   windows/build.sh                 # clippy -D warnings for Windows, then a debug dbmirror.exe
#   PROFILE=release windows/build.sh # a release exe (about twice the build time)
#   CLIPPY=0 windows/build.sh        # skip clippy
#
# The exe is target/windows/x86_64-pc-windows-gnu/<profile>/dbmirror.exe.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-debug}"
CLIPPY="${CLIPPY:-1}"
TARGET=x86_64-pc-windows-gnu

need=()
[ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -q . || need+=(rustc-web cargo-web rust-web-src)
[ -x /usr/bin/clippy-driver ] || need+=(rust-web-clippy)
command -v x86_64-w64-mingw32-gcc-posix >/dev/null || need+=(gcc-mingw-w64-x86-64-posix)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Cargo.toml's rust-version is the floor; the archive moves on, so only the floor is checked.
floor="$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)"
have="$(/usr/bin/rustc --version | awk '{print $2}')"
if [ "$(printf '%s\n%s\n' "$floor" "$have" | sort -V | head -1)" != "$floor" ]; then
  echo "Debian's rustc is $have; dbmirror needs $floor or newer" >&2
  exit 1
fi

export PATH="/usr/bin:$PATH"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/windows}"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc-posix
export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc-posix
export AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar
cargo=(/usr/bin/cargo)
std=(-Z build-std=std,panic_abort --target "$TARGET")
echo "Windows build with $(/usr/bin/rustc --version) and $(x86_64-w64-mingw32-gcc-posix --version | head -1)"
if [ "$CLIPPY" = 1 ]; then
  "${cargo[@]}" clippy "${std[@]}" --bin dbmirror -- -D warnings
fi
profile=()
[ "$PROFILE" = release ] && profile=(--release)
"${cargo[@]}" build "${std[@]}" "${profile[@]}" --bin dbmirror
ls -l "$CARGO_TARGET_DIR/$TARGET/$PROFILE/dbmirror.exe"
