#!/usr/bin/env bash
# One-command setup on Debian 12 (as root, or with sudo): Debian packages, the project's
# venv in .venv/, Mininet importable from it, Open vSwitch running. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(openvswitch-switch mininet iputils-ping iperf3 tcpdump tshark ethtool iproute2
          python3-venv procps psmisc etcd-server
          chromium gcc python3-dev libxdp-dev libbpf-dev nftables haproxy)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip "setuptools==80.9.0"
    .venv/bin/pip install -q -e '.[dev]'
    touch "$stamp"
fi

# The compiled modules: the VNF hot path (nfv/datapath/_fast.c, with the AF_XDP loop _xsk.c
# linked against libxdp) and route repair (sdn/compile/_routes.c); rebuilt whenever a
# source changed.
suffix=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
stale=0
for built in "nfv/datapath/_fast$suffix" "sdn/compile/_routes$suffix"; do
    [ -f "$built" ] || stale=1
    for src in setup.py nfv/datapath/_fast.c nfv/datapath/_fast.h nfv/datapath/_xsk.c \
               sdn/compile/_routes.c; do
        [ "$src" -nt "$built" ] && stale=1
    done
done
if [ "$stale" -eq 1 ]; then
    echo "setup: building the C modules"
    .venv/bin/python setup.py -q build_ext --inplace
fi

# Mininet comes from Debian's package; link just that package into the venv instead of
# exposing all of Debian's dist-packages.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mininet_dir=$(/usr/bin/python3 -c 'import mininet, os; print(os.path.dirname(mininet.__file__))')
ln -sfn "$mininet_dir" "$site/mininet"

# The web view's graph library, vendored from npm into the package (pinned, checked).
.venv/bin/python scripts/vendor_web.py

# Open vSwitch: start it without systemd when it is not running.
if ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
    echo "setup: starting Open vSwitch"
    $SUDO /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null
fi
ovs-vsctl --timeout=5 show >/dev/null
echo "setup: ok (datapath types: $(ovs-vsctl get Open_vSwitch . datapath_types))"
