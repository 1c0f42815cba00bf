#!/usr/bin/env bash
# tools/test_arm64.sh: build shoestring from its sdist and run the whole test suite inside Debian
# roots for 64-bit ARM (arm64, as on 64-bit Raspberry Pi OS) and 32-bit ARM (armhf, as on 32-bit
# Raspberry Pi OS), executed on an x86-64 host through qemu-user and binfmt_misc.
#
#   sudo tools/test_arm64.sh                       # both roots, sdist built from this checkout
#   sudo tools/test_arm64.sh --arch armhf          # one root
#   sudo tools/test_arm64.sh --create-only         # only create (or check) the cached roots
#   sudo tools/test_arm64.sh --sdist dist/shoestring-0.1.0.tar.gz -- -k kernels   # pytest args after --
#   sudo tools/test_arm64.sh --arch armhf --wheel wheelhouse/shoestring-0.1.0-cp39-abi3-manylinux_2_31_armv7l.whl
#                                                  # test a built wheel (CI does this for armv7l) with
#                                                  # this checkout's tests/ instead of an sdist
#
# Roots are created once with debootstrap and reused from $SHOESTRING_CHROOT_DIR
# (default /var/cache/shoestring-chroots); delete a root's directory to rebuild it. Creating one
# takes about 10-15 minutes (the second debootstrap stage runs under emulation).
#
# What each run checks, per architecture:
#   1. `pip install <sdist>` in a fresh venv inside the root builds the C extension with the root's gcc
#      (or, with --wheel, installs that wheel);
#   2. `shoestring info` reports NEON compiled in, supported by the CPU and active
#      (armhf: chosen at run time from AT_HWCAP; qemu-arm's default CPU has NEON);
#   3. the whole test suite from the sdist passes, then the kernel tests again with SHOESTRING_ISA=scalar.
#
# Dependencies inside the roots:
#   arm64: the package with its test extra from PyPI (manylinux aarch64 wheels, numpy 2.x), in
#          an isolated build, exactly what `pip install shoestring[test]` does on a 64-bit Pi.
#   armhf: Debian's python3-numpy (1.x) and python3-cffi with `--no-build-isolation` (PyPI has
#          no armv7 numpy wheels and building numpy under emulation takes hours; on a real Pi,
#          piwheels or apt provides them); setuptools>=77, the other runtime dependencies
#          (tqdm), pytest and hypothesis from the index.
#   Override with SHOESTRING_CHROOT_DEPS=pypi|debian.
#
# Host requirements: root, debootstrap, qemu-user-static, binfmt-support (installed with apt-get
# when missing; qemu only for an architecture the host cannot run natively: an ARM host runs
# arm64, and armhf when its CPU has AArch32, probed with a tiny armhf program), a qemu-<arch>
# binfmt_misc handler (registered by this script from qemu-<arch>-static when none is), network
# access to a Debian mirror (SHOESTRING_DEBIAN_MIRROR, default: the first Debian archive in
# /etc/apt/sources.list*) and, for pypi mode, to the package index. The host's
# index settings (PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, pip's global.index-url and
# global.extra-index-url when they are http(s) URLs) and CA bundle are passed into the root.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SHOESTRING_CHROOT_DIR:-/var/cache/shoestring-chroots}
SUITE=${SHOESTRING_DEBIAN_SUITE:-bookworm}
ARCHES="arm64 armhf"
SDIST=""
WHEEL=""
CREATE_ONLY=0
PYTEST_ARGS=()
INCLUDE="python3,python3-venv,python3-dev,python3-pip,gcc,libc6-dev,ca-certificates,\
python3-numpy,python3-cffi,python3-ply,python3-setuptools,python3-wheel,python3-pytest,python3-hypothesis"
# python3-ply: debootstrap cannot resolve virtual packages (python3-pycparser needs python3-ply-lex-3.10)

die() { echo "test_arm64: error: $*" >&2; exit 1; }
log() { echo "== [$(date +%H:%M:%S)] $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --arch) shift; [ "${1:-}" = all ] && ARCHES="arm64 armhf" || ARCHES="${1:?--arch needs arm64, armhf or all}" ;;
        --sdist) shift; SDIST=$(readlink -f "${1:?--sdist needs a file}") ;;
        --wheel) shift; WHEEL=$(readlink -f "${1:?--wheel needs a file}") ;;
        --create-only) CREATE_ONLY=1 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
for a in $ARCHES; do
    case "$a" in arm64|armhf) ;; *) die "unknown architecture '$a': use arm64, armhf or all" ;; esac
done
if [ -n "$WHEEL" ]; then
    [ -r "$WHEEL" ] || die "wheel '$WHEEL' not found"
    [ "$(wc -w <<<"$ARCHES")" -eq 1 ] || die "--wheel needs one --arch (the wheel's architecture)"
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot and mounts need it): sudo $0"

qemu_name() { case "$1" in arm64) echo aarch64 ;; armhf) echo arm ;; esac; }

# binfmt_misc magic and mask of each architecture's ELF executables (as qemu-binfmt-conf.sh has them)
binfmt_magic() {
    case "$1" in
        arm) echo '\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00' ;;
        aarch64) echo '\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' ;;
    esac
}
BINFMT_MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'

# A 96-byte static executable for each architecture that only exits with status 42: the
# probe of whether this host runs that code (natively, e.g. armhf on an ARMv7/ARMv8 CPU with
# AArch32, or through a registered handler).
probe_elf() {
    case "$1" in
        arm)  # ELF32 ARM EABI5: mov r0, #42; mov r7, #1 (exit); svc #0
            printf '\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00'
            printf '\x02\x00\x28\x00\x01\x00\x00\x00\x54\x00\x01\x00\x34\x00\x00\x00'
            printf '\x00\x00\x00\x00\x00\x04\x00\x05\x34\x00\x20\x00\x01\x00\x00\x00\x00\x00\x00\x00'
            printf '\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00'
            printf '\x60\x00\x00\x00\x60\x00\x00\x00\x05\x00\x00\x00\x00\x00\x01\x00'
            printf '\x2a\x00\xa0\xe3\x01\x70\xa0\xe3\x00\x00\x00\xef' ;;
        *) return 1 ;;
    esac
}

# True when this host executes <qemu-name> binaries right now (natively or through binfmt_misc).
runs_here() {
    local q=$1 f rc=0
    case "$q" in
        aarch64) [ "$(uname -m)" = aarch64 ] && return 0 ;;
    esac
    f=$(mktemp /tmp/shoestring-probe.XXXXXX)
    probe_elf "$q" > "$f" 2>/dev/null || { rm -f "$f"; return 1; }
    chmod +x "$f"
    "$f" 2>/dev/null || rc=$?
    rm -f "$f"
    [ "$rc" -eq 42 ]
}

native_arch() {  # the host runs <debian-arch> code without emulation
    case "$1:$(uname -m)" in
        arm64:aarch64) return 0 ;;
        armhf:armv7l|armhf:armv8l) return 0 ;;
        armhf:aarch64) [ ! -e /proc/sys/fs/binfmt_misc/qemu-arm ] && runs_here arm ;;
        *) return 1 ;;
    esac
}

debian_mirror() {
    if [ -n "${SHOESTRING_DEBIAN_MIRROR:-}" ]; then echo "$SHOESTRING_DEBIAN_MIRROR"; return; fi
    local url
    url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
              2>/dev/null | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]*/debian/?' \
          | grep -v security | head -n1 || true)
    echo "${url:-http://deb.debian.org/debian}"
}

ensure_host_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
    for a in $ARCHES; do
        native_arch "$a" && continue
        command -v "qemu-$(qemu_name "$a")-static" >/dev/null || missing+=(qemu-user-static)
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing host packages: ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

# Makes <debian-arch> code run here; prints "native", or the qemu handler's binfmt_misc flags.
# A host that runs the code natively (arm64 or armhf on ARM; armhf on an arm64 CPU with AArch32)
# needs no handler. Otherwise an enabled qemu-<arch> handler is used (registered beforehand, e.g.
# by docker/setup-qemu-action, or by binfmt-support); failing that, this script registers the
# installed qemu-<arch>-static itself, with the F flag so it also works inside the root. (The
# arm64 build of Debian's and Ubuntu's qemu-user-static registers no qemu-arm handler.)
ensure_binfmt() {
    local arch=$1 q entry exe
    q=$(qemu_name "$arch")
    entry=/proc/sys/fs/binfmt_misc/qemu-$q
    if native_arch "$arch"; then echo native; return; fi
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
            || die "cannot mount binfmt_misc (a container without it cannot run foreign binaries)"
    fi
    if [ ! -e "$entry" ] || ! grep -q '^enabled' "$entry"; then
        update-binfmts --enable "qemu-$q" >/dev/null 2>&1 || update-binfmts --enable >/dev/null 2>&1 || true
    fi
    if [ ! -e "$entry" ]; then
        exe=$(command -v "qemu-$q-static" || true)
        [ -n "$exe" ] || die "no qemu-$q binfmt handler and no qemu-$q-static to register: apt-get install qemu-user-static"
        printf ':qemu-%s:M::%s:%s:%s:F' "$q" "$(binfmt_magic "$q")" "$BINFMT_MASK" "$exe" \
            > /proc/sys/fs/binfmt_misc/register \
            || die "cannot register $exe with binfmt_misc"
        log "$arch: registered $exe as the qemu-$q binfmt_misc handler" >&2
    fi
    grep -q '^enabled' "$entry" 2>/dev/null \
        || die "binfmt_misc has no enabled qemu-$q handler: install qemu-user-static and binfmt-support"
    sed -n 's/^flags: //p' "$entry"
}

create_root() {
    local arch=$1 root=$CACHE/$SUITE-$1 t0 mirror flags
    mkdir -p "$CACHE"
    flags=$(ensure_binfmt "$arch")
    if [ -e "$root/.shoestring-ready" ]; then
        log "$arch: reusing $root (created $(cat "$root/.shoestring-ready"))"
    else
        mirror=$(debian_mirror)
        log "$arch: creating $root with debootstrap from $mirror (takes 10-15 minutes)"
        t0=$(date +%s)
        rm -rf "$root.partial"
        mkdir -p "$root.partial"
        if [ "$flags" != native ] && [[ "$flags" != *F* ]]; then  # handler not preloaded: the emulator must exist inside the root
            mkdir -p "$root.partial/usr/bin"
            cp "$(command -v "qemu-$(qemu_name "$arch")-static")" "$root.partial/usr/bin/"
        fi
        debootstrap --arch="$arch" --variant=minbase --include="$INCLUDE" \
            "$SUITE" "$root.partial" "$mirror" > "$CACHE/debootstrap-$arch.log" 2>&1 \
            || { tail -n 30 "$CACHE/debootstrap-$arch.log" >&2;
                 die "$arch: debootstrap failed (full log: $CACHE/debootstrap-$arch.log)"; }
        rm -rf "$root.partial/var/cache/apt/archives/"*.deb
        echo "$(date -u +%Y-%m-%dT%H:%MZ) in $(( $(date +%s) - t0 )) s" > "$root.partial/.shoestring-ready"
        mv "$root.partial" "$root"
        log "$arch: root created in $(( $(date +%s) - t0 )) s"
    fi
}

host_index_env() {
    local idx="${PIP_INDEX_URL:-}" extra="${PIP_EXTRA_INDEX_URL:-}" py
    py=$(command -v python3 || true)
    if [ -z "$idx" ] && [ -n "$py" ]; then idx=$("$py" -m pip config get global.index-url 2>/dev/null || true); fi
    if [ -z "$extra" ] && [ -n "$py" ]; then extra=$("$py" -m pip config get global.extra-index-url 2>/dev/null || true); fi
    # Only network indexes make sense inside the root; local file:// paths do not exist there.
    idx=$(tr ' ' '\n' <<<"$idx" | grep -E '^https?://' | head -n1 || true)
    extra=$(tr ' ' '\n' <<<"$extra" | grep -E '^https?://' | tr '\n' ' ' || true)
    echo "PIP_INDEX_URL=${idx} PIP_EXTRA_INDEX_URL=${extra% }"
}

MOUNTED=()
cleanup_mounts() {
    local i
    for (( i=${#MOUNTED[@]}-1; i>=0; i-- )); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
    MOUNTED=()
}
trap cleanup_mounts EXIT

test_in_root() {
    local arch=$1 root=$CACHE/$SUITE-$1 deps t0 rc=0
    deps=${SHOESTRING_CHROOT_DEPS:-$([ "$arch" = arm64 ] && echo pypi || echo debian)}
    for m in proc dev dev/pts sys; do
        mkdir -p "$root/$m"
        if ! mountpoint -q "$root/$m"; then
            if [ "$m" = proc ]; then mount -t proc proc "$root/proc"; else mount --bind "/$m" "$root/$m"; fi
            MOUNTED+=("$root/$m")
        fi
    done
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/shoestring-host-ca.crt"
    fi
    rm -rf "$root/work"
    mkdir -p "$root/work/src"
    local pkg name
    pkg=${WHEEL:-$SDIST}
    name=$(basename "$pkg")
    cp "$pkg" "$root/work/"
    if [ -n "$WHEEL" ]; then  # the tests come from this checkout
        cp -r "$REPO/tests" "$REPO/pyproject.toml" "$root/work/src/"
    else
        tar -xzf "$SDIST" -C "$root/work/src" --strip-components=1
    fi
    cat > "$root/work/run.sh" <<EOF
set -eu
cd /work
export HOME=/work PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 $(host_index_env)
[ -n "\$PIP_INDEX_URL" ] || unset PIP_INDEX_URL
[ -n "\$PIP_EXTRA_INDEX_URL" ] || unset PIP_EXTRA_INDEX_URL
[ -e /etc/ssl/certs/shoestring-host-ca.crt ] && export PIP_CERT=/etc/ssl/certs/shoestring-host-ca.crt
echo "root: \$(uname -m) userland \$(dpkg --print-architecture), \$(python3 --version), \$(gcc --version | head -n1)"
t=\$(date +%s)
if [ "$deps" = pypi ]; then
    python3 -m venv venv
    . venv/bin/activate
    pip install -q "/work/$name[test]"
else
    python3 -m venv --system-site-packages venv
    . venv/bin/activate
    # pyproject.toml needs setuptools >= 77 (Debian 12 has 66), which needs packaging >= 24.2
    # (Debian 12 has 23.0) for the SPDX license: both pure Python, from the index
    [ -n "$WHEEL" ] || pip install -q --upgrade "setuptools>=77" "packaging>=24.2"
    # numpy and cffi stay Debian's (they satisfy the requirements); the other runtime
    # dependencies (tqdm) and the test tools come from the index (Debian's hypothesis 6.67
    # predates APIs the tests use), as on a Pi with apt's numpy.
    pip install -q --no-build-isolation "/work/$name"
    pip install -q --upgrade pytest hypothesis
fi
pip list 2>/dev/null | grep -i -E '^(shoestring|numpy|cffi|pytest|hypothesis) ' || true
echo "install: \$(( \$(date +%s) - t )) s"
python -c 'import numpy, cffi; print("numpy", numpy.__version__, "cffi", cffi.__version__)'
shoestring info
python - <<'PY'
from shoestring import kernels
ok = ("neon" in kernels.isa_compiled() and "neon" in kernels.isa_available()
      and kernels.isa_active() == "neon")
print("neon check:", "compiled", kernels.isa_compiled(), "available", kernels.isa_available(),
      "active", kernels.isa_active())
raise SystemExit(0 if ok else "NEON is not compiled in, not detected, or not active")
PY
cd /tmp   # not the source tree: tests must import the installed package
t=\$(date +%s)
python -m pytest -q -p no:cacheprovider /work/src/tests $(printf '%q ' "${PYTEST_ARGS[@]}")
echo "tests: \$(( \$(date +%s) - t )) s"
t=\$(date +%s)
SHOESTRING_ISA=scalar python -m pytest -q -p no:cacheprovider /work/src/tests/test_kernels.py
echo "scalar kernel tests: \$(( \$(date +%s) - t )) s"
EOF
    log "$arch: install $name ($deps dependencies) and run the tests inside the root"
    t0=$(date +%s)
    chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 /bin/bash /work/run.sh || rc=$?
    cleanup_mounts
    log "$arch: $([ $rc -eq 0 ] && echo PASS || echo "FAIL (exit $rc)") in $(( $(date +%s) - t0 )) s"
    return $rc
}

main() {
ensure_host_tools
if [ "$CREATE_ONLY" -eq 0 ] && [ -z "$SDIST" ] && [ -z "$WHEEL" ]; then
    out=$(mktemp -d /tmp/shoestring-sdist.XXXXXX)
    log "building the sdist from $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
    # a Python with `build`: $PYTHON, else the checkout's .venv, else python3
    PY=${PYTHON:-}
    if [ -z "$PY" ]; then
        PY=python3
        if [ -x "$REPO/.venv/bin/python" ] && "$REPO/.venv/bin/python" -c 'import build' 2>/dev/null; then
            PY=$REPO/.venv/bin/python
        fi
    fi
    "$PY" -m build --sdist --outdir "$out" "$REPO" >/dev/null \
        || die "could not build the sdist: install 'build' ($PY -m pip install build) or pass --sdist FILE"
    SDIST=$(ls "$out"/shoestring-*.tar.gz)
fi
[ "$CREATE_ONLY" -eq 1 ] || [ -n "$WHEEL" ] || [ -r "$SDIST" ] || die "sdist '$SDIST' not found"

status=0
summary=()
for arch in $ARCHES; do
    t0=$(date +%s)
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.$arch.lock"
    flock 9   # a second run waits while the first creates the same root
    create_root "$arch"
    if [ "$CREATE_ONLY" -eq 1 ]; then
        exec 9>&-
        summary+=("$arch: root ready ($(( $(date +%s) - t0 )) s)")
        continue
    fi
    t1=$(date +%s)
    if test_in_root "$arch"; then r=PASS; else r=FAIL; status=1; fi
    exec 9>&-
    summary+=("$arch: $r (root $(( t1 - t0 )) s, install+tests $(( $(date +%s) - t1 )) s)")
done
echo
printf '%s\n' "${summary[@]}"
return $status
}

# Everything above is parsed before anything runs, and bash reads this last line whole before
# running it, so editing this file while a run is in progress cannot change what that run does
# (with `main` and `exit` on separate lines, the `exit` line was read after the run, from the
# edited file).
main; exit $?
