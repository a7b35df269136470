#!/usr/bin/env bash
# Soft-RoCE on a host whose own kernel has rdma_rxe (most distribution
# kernels do): creates or removes an rxe device on top of an Ethernet
# interface, so the verbs tests can run without a VM.
#
#   host.sh up [NETDEV]     load rdma_rxe, create rxe_<NETDEV> (idempotent)
#   host.sh down [NETDEV]   remove rxe_<NETDEV> (no error if absent)
#   host.sh status          list rdma links and verbs devices
#
# NETDEV defaults to the interface of the default route. Needs root for
# up/down. On a kernel without rdma_rxe use soft-roce-setup/vm/run.sh.
set -euo pipefail

program=soft-roce-setup/host.sh

die() {
    echo "$program: $*" >&2
    exit 1
}

usage() {
    echo "usage: $program up|down [NETDEV] | status" >&2
    exit 2
}

need_tool() {
    command -v "$1" >/dev/null 2>&1 ||
        die "'$1' not found; run soft-roce-setup/install-deps.sh (package $2) first"
}

default_netdev() {
    # The interface that carries the default route is the one a peer on the
    # same network would reach; fall back to IPv6 for IPv6-only hosts.
    local netdev
    netdev=$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
    if [ -z "$netdev" ]; then
        netdev=$(ip -6 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
    fi
    [ -n "$netdev" ] || die "no default route; name the interface: $program up NETDEV"
    echo "$netdev"
}

rxe_available() {
    # Loaded already, or built into the kernel: both show up in /sys/module.
    [ -d /sys/module/rdma_rxe ] && return 0
    modprobe rdma_rxe 2>/dev/null && return 0
    return 1
}

explain_missing_rxe() {
    local kernel_release
    kernel_release=$(uname -r)
    {
        echo "$program: this kernel ($kernel_release) cannot load rdma_rxe (soft-RoCE)."
        if [ ! -d "/lib/modules/$kernel_release" ]; then
            echo "  There is no /lib/modules/$kernel_release: the kernel has no loadable modules here"
            echo "  (a container, or a VM/sandbox kernel built without them)."
        elif ! grep -qs '^CONFIG_RDMA_RXE=' "/boot/config-$kernel_release" &&
            [ -f "/boot/config-$kernel_release" ]; then
            echo "  /boot/config-$kernel_release does not enable CONFIG_RDMA_RXE."
        else
            echo "  'modprobe rdma_rxe' said: $(modprobe rdma_rxe 2>&1 || true)"
        fi
        echo "  Use soft-roce-setup/vm/run.sh CMD [ARGS...] instead: it boots a small VM"
        echo "  with a Debian kernel that has rdma_rxe and runs CMD there with rxe0 up."
    } >&2
    exit 1
}

link_exists() {
    rdma link show "$1/1" >/dev/null 2>&1
}

command_up() {
    local netdev=$1 name
    name="rxe_$netdev"
    [ "$(id -u)" -eq 0 ] || die "'up' needs root (modprobe, rdma link add)"
    ip link show dev "$netdev" >/dev/null 2>&1 || die "no network interface named '$netdev'"
    rxe_available || explain_missing_rxe
    if link_exists "$name"; then
        echo "$program: $name already exists on $netdev"
        return 0
    fi
    # rxe carries RoCE v2 over UDP on this interface; it must be up, or the
    # port stays DOWN and every QP transition to RTR fails.
    ip link set dev "$netdev" up
    if ! rdma link add "$name" type rxe netdev "$netdev"; then
        die "'rdma link add $name type rxe netdev $netdev' failed (another rxe device on $netdev? see: $program status)"
    fi
    echo "$program: $name up on $netdev"
    rdma link show "$name/1"
}

command_down() {
    local netdev=$1 name
    name="rxe_$netdev"
    [ "$(id -u)" -eq 0 ] || die "'down' needs root (rdma link delete)"
    if ! link_exists "$name"; then
        echo "$program: no $name; nothing to remove"
        return 0
    fi
    rdma link delete "$name"
    echo "$program: $name removed"
}

command_status() {
    echo "# rdma link show"
    if ! rdma link show; then
        echo "# this kernel has no RDMA netlink support; use soft-roce-setup/vm/run.sh"
    fi
    echo "# ibv_devices"
    ibv_devices || true
    if [ ! -d /sys/module/rdma_rxe ]; then
        echo "# rdma_rxe is not loaded (try: $program up)"
    fi
}

[ $# -ge 1 ] || usage
need_tool ip iproute2
need_tool rdma iproute2
case "$1" in
up | down)
    [ $# -le 2 ] || usage
    netdev=${2:-$(default_netdev)}
    "command_$1" "$netdev"
    ;;
status)
    [ $# -eq 1 ] || usage
    need_tool ibv_devices ibverbs-utils
    command_status
    ;;
*) usage ;;
esac
