#!/usr/bin/env bash
# Print the absolute path of a working CPython 3.13 (AWS Lambda's python3.13 runtime version) on one
# line of stdout, so the build and the tests run the layer and the functions under the version that
# ships. On failure: exit non-zero with one line on stderr.
#
# Where it looks, in order (the first that passes the check below wins):
#   1. $PGKEEPER_PYTHON313, when set (a broken one is an error, not skipped);
#   2. python3.13 on PATH;
#   3. ${PYENV_ROOT:-~/.pyenv}/versions/3.13*/bin/python3.13, newest first;
#   4. the copy this script fetched before, under ${XDG_CACHE_HOME:-~/.cache}/pgkeeper/python3.13/;
#   5. otherwise it fetches one: Debian 13 (trixie) ships python3.13, so its .deb packages are
#      downloaded with apt-get under a private apt configuration (nothing is installed on the
#      machine) and unpacked into that cache directory.
# PGKEEPER_PYTHON313_FETCH=1 skips 1-3 (the fetched copy, cached or new). PGKEEPER_DEBIAN_MIRROR
# overrides the Debian archive URI, which is otherwise the one this machine's apt uses.
#
# The check: `import sys, ssl, hashlib, zlib, ctypes, json` and version 3.13, after which the
# interpreter's own sys.executable is printed (never a pyenv shim, which needs pyenv to run). That
# path must then also pass the check with an empty environment: the Lambda sandbox in the tests
# execs it directly, with Lambda's environment and nothing else.
set -euo pipefail

die() { echo "python313: $*" >&2; exit 1; }
# Progress only for a person watching: a caller reading stderr sees just the one failure line.
note() { if [[ -t 2 ]]; then echo "python313: $*" >&2; fi; }

readonly CHECK='import sys, ssl, hashlib, zlib, ctypes, json
assert sys.version_info[:2] == (3, 13), sys.version
print(sys.executable)'

# Print the interpreter path behind candidate $1 if it passes the check; fail quietly otherwise.
resolve() {
    local exe
    exe=$("$1" -c "$CHECK" 2>/dev/null) || return 1
    [[ $exe == /* && -x $exe ]] || return 1
    env -i "$exe" -c "$CHECK" >/dev/null 2>&1 || return 1
    printf '%s\n' "$exe"
}

if [[ ${PGKEEPER_PYTHON313_FETCH:-} != 1 ]]; then
    if [[ -n ${PGKEEPER_PYTHON313:-} ]]; then
        resolve "$PGKEEPER_PYTHON313" \
            || die "PGKEEPER_PYTHON313=$PGKEEPER_PYTHON313 is not a working CPython 3.13 (with ssl, hashlib, zlib, ctypes)"
        exit 0
    fi
    if found=$(command -v python3.13) && resolve "$found"; then
        exit 0
    fi
    while IFS= read -r found; do
        if [[ -n $found ]] && resolve "$found"; then
            exit 0
        fi
    done < <(compgen -G "${PYENV_ROOT:-${HOME:-}/.pyenv}/versions/3.13*/bin/python3.13" | sort -rV)
fi

# --- 4 and 5: the copy fetched from Debian 13 ------------------------------------------------------
# Keep the cache off /tmp and /var for the Lambda tier: its sandbox mounts fresh ones over them.

[[ -n ${XDG_CACHE_HOME:-} || -n ${HOME:-} ]] || die "neither XDG_CACHE_HOME nor HOME is set: nowhere to keep a fetched python3.13"
mkdir -p "${XDG_CACHE_HOME:-$HOME/.cache}/pgkeeper/python3.13" 2>/dev/null || die "cannot create the cache directory under ${XDG_CACHE_HOME:-$HOME/.cache}"
# Absolute and physical: these paths are written into the interpreter binary below.
CACHE=$(cd "${XDG_CACHE_HOME:-$HOME/.cache}/pgkeeper/python3.13" && pwd -P)
readonly CACHE ROOT=$CACHE/root
readonly PYTHON=$ROOT/usr/bin/python3.13

if resolve "$PYTHON"; then
    exit 0
fi

# One fetch at a time (tests may start in parallel); whoever waited finds the cache filled.
command -v flock >/dev/null || die "flock (util-linux) is needed to fetch python3.13"
{ exec 9>"$CACHE/.lock"; } 2>/dev/null || die "cannot write in $CACHE"
flock -w 900 9 || die "another fetch has held $CACHE/.lock for 15 minutes"
if resolve "$PYTHON"; then
    exit 0
fi

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "no python3.13 found, and fetching Debian 13's needs apt-get and dpkg-deb (a Debian machine)"

case $(uname -m) in
    x86_64) DEB_ARCH=amd64 TRIPLET=x86_64-linux-gnu LOADER=ld-linux-x86-64.so.2 ;;
    aarch64 | arm64) DEB_ARCH=arm64 TRIPLET=aarch64-linux-gnu LOADER=ld-linux-aarch64.so.1 ;;
    *) die "no python3.13 found, and no recipe to fetch one for $(uname -m) (only x86_64 and aarch64)" ;;
esac

# The Debian archive this machine's apt already uses (its mirror, its proxy settings), unless told.
system_mirror() {
    local id="" codename=""
    # shellcheck disable=SC1091
    [[ -r /etc/os-release ]] && { id=$(. /etc/os-release && echo "${ID:-}"); codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}"); }
    [[ $id == debian && -n $codename ]] || return 0
    apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(TARGET_OF)' 2>/dev/null \
        | awk -v suite="$codename" '$2 == suite && $3 == "main" && $4 == "deb" { print $1; exit }'
}
MIRROR=${PGKEEPER_DEBIAN_MIRROR:-$(system_mirror)}
[[ -n $MIRROR ]] || die "no python3.13 found, and no Debian archive in this machine's apt sources: set PGKEEPER_DEBIAN_MIRROR to one"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $KEYRING ]] || die "no python3.13 found, and $KEYRING (package debian-archive-keyring) is missing to check Debian 13's packages"

note "no python3.13 here: fetching Debian 13's into $CACHE (once)"
WORK=$(mktemp -d "$CACHE/fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG=$WORK/log
mkdir -p "$WORK/apt/state/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/debs" "$WORK/root"
: >"$WORK/apt/state/status"
echo "deb [signed-by=$KEYRING] $MIRROR trixie main" >"$WORK/apt/sources.list"

# A private apt: trixie's package lists only, its own state and cache, an empty dpkg status (so the
# machine's installed packages neither satisfy nor constrain anything), no pinning from /etc/apt.
# The machine's /etc/apt/apt.conf.d still applies (proxy, mirror quirks); -o options override it.
APT=(apt-get -q
    -o "Dir::Etc::sourcelist=$WORK/apt/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::Etc::preferences=$WORK/apt/preferences"
    -o "Dir::Etc::preferencesparts=-"
    -o "Dir::State=$WORK/apt/state"
    -o "Dir::State::status=$WORK/apt/state/status"
    -o "Dir::Cache=$WORK/apt/cache"
    -o "APT::Get::List-Cleanup=0"
    -o "APT::Architecture=$DEB_ARCH"
    -o "APT::Architectures=$DEB_ARCH"
    # As root apt hands downloads to user _apt, which cannot write into root's cache directory.
    -o "APT::Sandbox::User=$(id -un)")
# apt's first error line, for the one-line message (the log goes away with $WORK).
first_error() {
    { grep -m1 '^E: ' "$LOG" || grep -m1 -E '^(W: |Err:)' "$LOG" || echo "apt-get failed"; } \
        | sed 's/^E: //' | tr -s ' ' | cut -c1-300
}

"${APT[@]}" --error-on=any update >>"$LOG" 2>&1 \
    || die "cannot fetch Debian 13 (trixie) package lists from $MIRROR: $(first_error)"

# Let apt's resolver pick the packages (libc6 and its loader, libssl3t64, libffi8, zlib1g, liblzma5,
# libbz2, libsqlite3-0, ... at trixie's versions). libstdc++6 is for patchelf below and for wheels with
# C++ extensions. Dropped: packages that only hold data at fixed machine paths (/usr/share/zoneinfo,
# /etc/services, /etc/mime.types), which an unpacked interpreter reads from the machine anyway, and
# debconf, which only tzdata wanted.
WANT=(python3.13-minimal libpython3.13-minimal libpython3.13-stdlib libc6 libstdc++6 patchelf)
PLAN=$("${APT[@]}" -s --no-install-recommends install "${WANT[@]}" 2>>"$LOG") \
    || die "Debian 13 (trixie) does not offer ${WANT[*]} for $DEB_ARCH: $(first_error)"
mapfile -t PACKAGES < <(awk '$1 == "Inst" { print $2 }' <<<"$PLAN" | grep -vxE 'debconf|tzdata|netbase|media-types')

(cd "$WORK/debs" && "${APT[@]}" download "${PACKAGES[@]}") >>"$LOG" 2>&1 \
    || die "cannot download Debian 13's python3.13 packages from $MIRROR: $(first_error)"
for deb in "$WORK"/debs/*.deb; do
    dpkg-deb -x "$deb" "$WORK/root" || die "cannot unpack $(basename "$deb")"
done

# Trixie's python3.13 needs trixie's glibc (newer than Debian 12's): the binary is pointed at
# trixie's own loader and libraries where they will live, $ROOT. Patching the ELF (rather than a
# wrapper running `ld.so python3.13`) keeps sys.executable and /proc/PID/exe the real, directly
# runnable interpreter, so subprocesses that re-exec sys.executable and the Lambda sandbox (which
# execs it with an empty environment) work. DT_RPATH, not DT_RUNPATH: only RPATH also serves the
# libraries of the extension modules Python dlopens (libssl for _ssl, libffi for _ctypes, ...).
# Since python3.13 finds its stdlib relative to its own path, no PYTHONHOME is needed, but the
# cache directory cannot move: a moved copy fails the check and is fetched again.
LIBDIR=usr/lib/$TRIPLET
patchelf() { "$WORK/root/$LIBDIR/$LOADER" --library-path "$WORK/root/$LIBDIR" "$WORK/root/usr/bin/patchelf" "$@"; }
# Two calls, RPATH first: trixie's patchelf 0.18 leaves this non-PIE binary crashing when both
# change in one call, or when the interpreter changes first.
patchelf --force-rpath --set-rpath "$ROOT/$LIBDIR" "$WORK/root/usr/bin/python3.13" >>"$LOG" 2>&1 \
    || die "patchelf could not set python3.13's library path: $(tail -n1 "$LOG")"
patchelf --set-interpreter "$ROOT/$LIBDIR/$LOADER" "$WORK/root/usr/bin/python3.13" >>"$LOG" 2>&1 \
    || die "patchelf could not set python3.13's loader: $(tail -n1 "$LOG")"

rm -rf "$ROOT"
mv "$WORK/root" "$ROOT"
if ! resolve "$PYTHON"; then
    why=$(env -i "$PYTHON" -c "$CHECK" 2>&1 | tail -n1 || true)
    die "the python3.13 fetched from Debian 13 into $ROOT does not work: ${why:-no output}"
fi
