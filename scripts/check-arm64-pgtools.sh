#!/usr/bin/env bash
# Run the backup tests with the *arm64* pgtools layer on an x86_64 machine, under qemu-user.
#
# The template's default architecture is arm64, and its pg_dump/pg_restore/psql cannot run here
# natively. This builds the layer for arm64 exactly as `sam build` does, gives qemu-aarch64 an
# arm64 glibc (Debian's libc6-arm64-cross) and zlib (the two things the layer takes from the
# Lambda runtime), and runs tests/integration/test_backup*.py through small wrapper scripts.
# Needs: qemu-user and libc6-arm64-cross (apt-get install qemu-user libc6-arm64-cross), apt for
# zlib1g:arm64 (downloaded, not installed), and the project's venv (`make venv`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/layers/pgtools/.check-arm64"
SYSROOT=/usr/aarch64-linux-gnu

command -v qemu-aarch64 >/dev/null || { echo "needs qemu-aarch64: apt-get install qemu-user" >&2; exit 2; }
[ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ] || { echo "needs an arm64 glibc: apt-get install libc6-arm64-cross" >&2; exit 2; }

rm -rf "$WORK" && mkdir -p "$WORK/zlib" "$WORK/bin"
echo "== building the pgtools layer for arm64"
make -s -C "$ROOT/layers/pgtools" build-PgToolsLayer ARTIFACTS_DIR="$WORK" PGKEEPER_ARCH=arm64 >/dev/null

echo "== zlib for arm64 (Debian's zlib1g:arm64, unpacked; the Lambda runtime has its own)"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    # Whatever happens next, leave apt as it was.
    trap 'dpkg --remove-architecture arm64 || true' EXIT
    apt-get update -qq
fi
(cd "$WORK" && apt-get download -qq zlib1g:arm64)
dpkg -x "$WORK"/zlib1g_*_arm64.deb "$WORK/zlib"

LIBS="$WORK/pgtools/lib:$(dirname "$(find "$WORK/zlib" -name 'libz.so.1' | head -1)")"
for tool in pg_dump pg_restore psql; do
    cat > "$WORK/bin/$tool" <<EOF
#!/bin/sh
exec qemu-aarch64 -L $SYSROOT -E LD_LIBRARY_PATH=$LIBS $WORK/pgtools/bin/$tool "\$@"
EOF
    chmod +x "$WORK/bin/$tool"
done
"$WORK/bin/pg_dump" --version
"$WORK/bin/pg_restore" --version

echo "== backup tests with the arm64 binaries"
cd "$ROOT"
PGKEEPER_TEST_PG_BIN_DIR="$WORK/bin" .venv/bin/python -m pytest -q tests/integration/test_backup.py \
    tests/integration/test_backup_retention.py "$@"
