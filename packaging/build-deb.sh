#!/usr/bin/env bash
# Build the Debian package of agentd: its own Python environment under /opt/agentd (a venv
# of Debian's python3 holding agentd's wheel and its dependencies), /usr/bin/agentd, the
# systemd units and an example configuration.
#
#   packaging/build-deb.sh [--out DIR] [--wheelhouse DIR] [--offline] [--compress xz|gzip|none]
#
# --wheelhouse DIR  where dependency wheels are collected and reused (default:
#                   ${XDG_CACHE_HOME:-~/.cache}/agentd/wheelhouse). Filled from the package
#                   registry on the first build; --offline then builds from it alone.
# Needs: dpkg-deb, fakeroot, Debian's python3 with venv (python3-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

OUT="$REPO/dist"
WHEELHOUSE="${XDG_CACHE_HOME:-$HOME/.cache}/agentd/wheelhouse"
OFFLINE=0
COMPRESS=xz
# The target's interpreter: the venv links to it, so it must be the one the PCs have.
TARGET_PYTHON="${TARGET_PYTHON:-/usr/bin/python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$(realpath -m "$2"); shift 2 ;;
    --wheelhouse) WHEELHOUSE=$(realpath -m "$2"); shift 2 ;;
    --offline) OFFLINE=1; shift ;;
    --compress) COMPRESS="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in dpkg-deb fakeroot "$TARGET_PYTHON"; do
  command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is missing (apt-get install dpkg-dev fakeroot python3-venv)" >&2; exit 2; }
done

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' agentd/__init__.py)
PYVER=$("$TARGET_PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
ARCH=$(dpkg --print-architecture)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/root"
PREFIX=/opt/agentd
mkdir -p "$WHEELHOUSE" "$OUT"

echo "build-deb.sh: agentd $VERSION for python$PYVER ($ARCH)" >&2
# 1. The wheels: agentd's own, then every dependency. The wheelhouse is tried alone
#    first (fast, and works offline); the registry only fills what it lacks.
"$TARGET_PYTHON" -m venv "$WORK/buildenv"
BUILD_PIP=("$WORK/buildenv/bin/python" -m pip -q --disable-pip-version-check)
from_registry() {
  if [ "$OFFLINE" = 1 ]; then
    echo "build-deb.sh: --offline, and $WHEELHOUSE lacks what is needed ($*)" >&2
    exit 1
  fi
  "${BUILD_PIP[@]}" "$@"
}
BUILD_TOOLS=("setuptools>=77" wheel)  # 77: project.license as an SPDX string (PEP 639)
"${BUILD_PIP[@]}" install --no-index --find-links "$WHEELHOUSE" "${BUILD_TOOLS[@]}" 2>/dev/null || {
  from_registry wheel -w "$WHEELHOUSE" "${BUILD_TOOLS[@]}"
  "${BUILD_PIP[@]}" install --no-index --find-links "$WHEELHOUSE" "${BUILD_TOOLS[@]}"
}
"${BUILD_PIP[@]}" wheel --no-deps --no-build-isolation --no-index -w "$WORK/wheels" "$REPO"
WHEEL=$(ls "$WORK"/wheels/agentd-*.whl)
"${BUILD_PIP[@]}" wheel --no-index --find-links "$WHEELHOUSE" -w "$WORK/deps" "$WHEEL" 2>/dev/null \
  || from_registry wheel --find-links "$WHEELHOUSE" -w "$WHEELHOUSE" "$WHEEL"
rm -f "$WHEELHOUSE"/agentd-*.whl  # only the dependencies are worth keeping

# 2. The environment, created where it will live (under the stage), paths fixed after.
# realpath: link to python3.X itself, the interpreter the package depends on.
"$(realpath "$TARGET_PYTHON")" -m venv "$STAGE$PREFIX"
"$STAGE$PREFIX/bin/python" -m pip -q --disable-pip-version-check install --no-compile --no-index \
  --find-links "$WHEELHOUSE" "$WHEEL"
"$STAGE$PREFIX/bin/python" -m pip -q --disable-pip-version-check uninstall -y pip >/dev/null
find "$STAGE$PREFIX" -name __pycache__ -type d -prune -exec rm -rf {} +
# Scripts and activate files name the stage; on the PC they live at $PREFIX.
grep -rlI --null "$STAGE" "$STAGE$PREFIX/bin" "$STAGE$PREFIX/pyvenv.cfg" | xargs -0 -r sed -i "s#$STAGE##g"
rm -f "$STAGE$PREFIX/bin/pip" "$STAGE$PREFIX/bin/pip3" "$STAGE$PREFIX/bin/pip$PYVER"

# 3. What sits around it.
install -d "$STAGE/usr/bin" "$STAGE/lib/systemd/system" "$STAGE/usr/lib/sysusers.d" \
  "$STAGE/usr/lib/systemd/system-preset" "$STAGE/etc/agentd" "$STAGE/usr/share/doc/agentd/examples"
install -d -m 0700 "$STAGE/etc/agentd/credentials"
ln -s "$PREFIX/bin/agentd" "$STAGE/usr/bin/agentd"
install -m 0644 systemd/agentd.service systemd/agentd-archive.service systemd/agentd-archive.timer "$STAGE/lib/systemd/system/"
install -m 0644 systemd/agentd.service.d/local.conf.example "$STAGE/usr/share/doc/agentd/examples/agentd.service.d-local.conf"
install -m 0644 systemd/agentd.service.d/credentials.conf.example "$STAGE/usr/share/doc/agentd/examples/credentials.conf"
install -m 0644 packaging/debian/sysusers.conf "$STAGE/usr/lib/sysusers.d/agentd.conf"
install -m 0644 packaging/debian/agentd.preset "$STAGE/usr/lib/systemd/system-preset/80-agentd.preset"
install -m 0640 packaging/agentd.toml.example "$STAGE/etc/agentd/agentd.toml"
install -m 0644 packaging/agentd.toml.example "$STAGE/usr/share/doc/agentd/examples/agentd.toml"
[ -f README.md ] && install -m 0644 README.md "$STAGE/usr/share/doc/agentd/README.md"
install -m 0644 packaging/PLATFORMS.md "$STAGE/usr/share/doc/agentd/PLATFORMS.md"

# 4. Control files.
install -d "$STAGE/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$STAGE/DEBIAN/"
echo /etc/agentd/agentd.toml > "$STAGE/DEBIAN/conffiles"
SIZE_KB=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: agentd
Version: $VERSION
Architecture: $ARCH
Maintainer: agentd maintainers <agentd@localhost>
Installed-Size: $SIZE_KB
Depends: python$PYVER, systemd
Section: net
Priority: optional
Homepage: https://example.invalid/agentd
Description: readiness and incident diagnostics for Genesys Cloud WebRTC softphone agents
 A service on the agent's PC that measures the path to the Genesys Cloud media and
 signaling edge (DNS, HTTPS, WebSocket, STUN, TURN, media), runs pre-shift checks on a
 schedule, keeps a host timeline, and names the cause of a dropped or choppy call.
 Ships its own Python environment under /opt/agentd.
CONTROL

DEB="$OUT/agentd_${VERSION}_${ARCH}.deb"
fakeroot dpkg-deb --root-owner-group -Z"$COMPRESS" --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
