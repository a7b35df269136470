#!/usr/bin/env bash
# Installs the Debian 12 packages that the soft-RoCE scripts, the RDMA
# crates and the ZooKeeper store's tests need. Idempotent and silent when
# everything is already present, so vm/run.sh can call it before every run
# at the cost of a few `dpkg -s`.
# Must run as root (it calls apt-get) unless nothing is missing.
set -euo pipefail

packages=(
    qemu-system-x86   # the VM for hosts whose kernel lacks rdma_rxe
    busybox-static    # userland of the VM's initramfs
    libibverbs-dev    # headers and libibverbs for rdma-sys / bindgen
    librdmacm-dev     # headers and librdmacm for rdma-sys / bindgen
    ibverbs-providers # librxe-rdmav34.so, the user-space half of soft-RoCE
    rdma-core         # /etc/libibverbs.d and udev rules
    perftest          # ib_read_lat & co., a reference to compare against
    ibverbs-utils     # ibv_devinfo, ibv_devices
    libclang-dev      # bindgen (used by rdma-sys) needs libclang
    pkg-config        # rdma-sys finds libibverbs and librdmacm with it
    jq                # compare-perftest.sh reads farm rdma-bench's JSON
    kmod              # modprobe/depmod, also used to order the VM's modules
    cpio              # packs the initramfs
    iproute2          # `rdma link add ... type rxe`
    zookeeper         # the ZooKeeper configuration store's tests start a
                      # server from it (zookeeperd, the service, stays out)
)

missing=()
for package in "${packages[@]}"; do
    # `dpkg -s` also succeeds for removed-but-not-purged packages, so check
    # the status line rather than the exit code alone.
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: missing packages: ${missing[*]}" >&2
    echo "install-deps.sh: run it as root (or: sudo $0)" >&2
    exit 1
fi

echo "install-deps.sh: installing ${missing[*]}" >&2
# Another apt/dpkg (unattended-upgrades, a provisioning script) may hold the
# lock; wait for it instead of failing the whole run.
export DEBIAN_FRONTEND=noninteractive
apt_options=(-o DPkg::Lock::Timeout=600 -q)
apt-get "${apt_options[@]}" update
apt-get "${apt_options[@]}" install -y "${missing[@]}"
