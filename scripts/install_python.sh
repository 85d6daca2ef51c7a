#!/usr/bin/env bash
# The image's Python (Dockerfile: FROM public.ecr.aws/lambda/python:3.12) for the tests: prints
# the path of a CPython 3.12. The machine's python3.12 when it has one; otherwise CPython built
# once from source into .tools/python3.12 (gitignored), which later runs reuse (about 5 minutes
# on 2 cores). The prebuilt CPythons (uv, pyenv, python.org) download from hosts CI cannot
# reach, so the source is upstream's release tarball as Ubuntu 24.04 ships it, pinned by sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
version=3.12.3
sha256=56bfef1fdfc1221ce6720e43a661e3eb41785dd914ce99698d8c7896af4bdaa1
url="http://archive.ubuntu.com/ubuntu/pool/main/p/python3.12/python3.12_${version}.orig.tar.xz"
prefix="$PWD/.tools/python3.12"
python="$prefix/bin/python3.12"
# What refload and its tests import: boto3/moto need ssl, pyarrow and the sources lzma, bz2,
# zlib; duckdb and psycopg ctypes; the SQL tests sqlite3.
modules="ssl, sqlite3, lzma, bz2, zlib, ctypes, hashlib, uuid, decimal, zoneinfo, venv, ensurepip"

if command -v python3.12 >/dev/null && python3.12 -c "import $modules" 2>/dev/null; then
  command -v python3.12
  exit 0
fi
if [ "$(cat "$prefix/.built" 2>/dev/null)" = "$sha256" ]; then
  echo "$python"
  exit 0
fi

echo "building CPython $version into .tools/python3.12 (once)" >&2
missing=""
for pkg in gcc make pkg-config xz-utils libssl-dev libsqlite3-dev liblzma-dev libbz2-dev \
  zlib1g-dev libffi-dev uuid-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086  # one word a package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
if ! curl -fsSL --retry 3 -o "$build/python.tar.xz" "$url"; then
  # Never a red CI for want of one host: the machine's python3 runs the tests instead, and
  # scripts/test.sh says so loudly (and leaves out the one test that asserts 3.12).
  echo "WARNING: could not download CPython $version's source; the tests run on $(python3 -V)" >&2
  command -v python3
  exit 0
fi
echo "$sha256  $build/python.tar.xz" | sha256sum -c --quiet -
tar -xJf "$build/python.tar.xz" -C "$build" --strip-components=1
rm -rf "$prefix"
# No PGO/LTO (--enable-optimizations): they triple the build time, and the tests only need
# the image's language and standard library, not its speed. No readline, tkinter or test suite.
if ! (
  cd "$build"
  ./configure --prefix="$prefix" --with-ensurepip=no --disable-test-modules
  make -j"$(nproc)"
  make altinstall
) >"$build/build.log" 2>&1; then
  tail -40 "$build/build.log" >&2
  exit 1
fi
"$python" -c "import $modules" || { echo "CPython $version built without: $modules" >&2; exit 1; }
echo "$sha256" >"$prefix/.built"
echo "$python"
