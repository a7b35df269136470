#!/usr/bin/env bash
# Prepares the kernel and initramfs of the soft-RoCE VM that run.sh boots,
# cached under $REPO/target/softroce/ (so `cargo clean` removes it too):
#
#   vmlinuz               Debian 12's current linux-image-amd64 kernel, which
#                         has rdma_rxe as a module
#   initramfs.cpio.gz     busybox-static, the modules for 9p, virtio ports and
#                         soft-RoCE, and vm/init as /init
#   initramfs.stamp       hash of what the initramfs was built from; a change
#                         to this script, to vm/init or to the kernel
#                         rebuilds it
#   kernel/*.deb          the downloaded kernel package, kept so a rebuild
#                         needs no network
#
# Prints nothing when the cache is current. Needs apt (for the one download),
# kmod (depmod, modprobe), cpio and gzip; install-deps.sh installs them.
# FARM_VM_REFRESH_KERNEL=1 drops the cached kernel package and fetches the
# one linux-image-amd64 depends on now.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=$repo/target/softroce
program=soft-roce-setup/vm/build.sh

# Modules the VM loads; their dependencies are added by depmod/modprobe.
#   virtio_pci, 9pnet_virtio, 9p: the host's root file system and the job
#     directory (Debian builds virtio and 9p as modules)
#   virtio_console: the farm.stdout / farm.stderr ports
#   crc32_generic: rxe computes the RoCE ICRC through the crypto API's
#     "crc32", which no module dependency pulls in
#   rdma_rxe, ib_uverbs: soft-RoCE and /dev/infiniband/uverbs0
#   rdma_ucm: /dev/infiniband/rdma_cm, for anything that uses librdmacm
#   dummy: the netdev rxe0 sits on; the VM has no network card
modules_wanted=(
    virtio_pci 9pnet_virtio 9p virtio_console
    crc32_generic ib_core ib_uverbs rdma_rxe rdma_ucm dummy
)
# Module parameters: dummy would otherwise create a stray dummy0 next to
# the d0 that init makes.
declare -A module_parameters=(
    [dummy]=numdummies=0
)

die() {
    echo "$program: $*" >&2
    exit 1
}

mkdir -p "$cache/kernel"
# Two run.sh started at once must not both build into the same files.
exec 9>"$cache/.build.lock"
flock 9

resolve_kernel_package() {
    # linux-image-amd64 is the metapackage that tracks Debian's current
    # kernel ABI; the real package name (linux-image-6.1.0-NN-amd64) changes
    # with point releases, so ask apt rather than hard-coding it.
    local package
    package=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    if [ -z "$package" ]; then
        # A fresh machine (or container) may have no package lists yet.
        apt-get -q -o DPkg::Lock::Timeout=600 update >&2 ||
            die "apt-get update failed; cannot find the kernel package"
        package=$(apt-cache depends linux-image-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    fi
    [ -n "$package" ] || die "apt-cache depends linux-image-amd64 names no linux-image-<version> package"
    echo "$package"
}

if [ "${FARM_VM_REFRESH_KERNEL:-0}" = 1 ]; then
    rm -f "$cache"/kernel/*.deb
fi

shopt -s nullglob
kernel_debs=("$cache"/kernel/linux-image-*.deb)
shopt -u nullglob
if [ "${#kernel_debs[@]}" -ne 1 ]; then
    rm -f "$cache"/kernel/*.deb
    package=$(resolve_kernel_package)
    echo "$program: downloading $package (once; cached in $cache/kernel)" >&2
    # Sandbox user root: the _apt user cannot write into a root-owned target/.
    (cd "$cache/kernel" && apt-get download -q -o APT::Sandbox::User=root "$package" >&2) ||
        die "apt-get download $package failed"
    kernel_debs=("$cache"/kernel/linux-image-*.deb)
fi
kernel_deb=${kernel_debs[0]}

stamp=$(
    {
        sha256sum "$here/build.sh" "$here/init" | awk '{ print $1 }'
        basename "$kernel_deb"
        busybox_path=$(command -v busybox) && sha256sum "$busybox_path" | awk '{ print $1 }'
    } | sha256sum | awk '{ print $1 }'
)
if [ -f "$cache/vmlinuz" ] && [ -f "$cache/initramfs.cpio.gz" ] &&
    [ "$(cat "$cache/initramfs.stamp" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi

echo "$program: building the VM kernel and initramfs in $cache" >&2
command -v busybox >/dev/null || die "busybox not found; run soft-roce-setup/install-deps.sh"
busybox_path=$(command -v busybox)
# The initramfs has no C library, so only a static busybox works there.
if ldd "$busybox_path" >/dev/null 2>&1; then
    die "$busybox_path is dynamically linked; install busybox-static"
fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The full module tree is about 400 MB; extract it to a scratch directory,
# take the few modules needed and drop the rest.
dpkg-deb -x "$kernel_deb" "$work/kernel"
shopt -s nullglob
kernel_releases=("$work"/kernel/lib/modules/*)
shopt -u nullglob
[ "${#kernel_releases[@]}" -eq 1 ] || die "$(basename "$kernel_deb") holds ${#kernel_releases[@]} module trees, expected 1"
kernel_release=$(basename "${kernel_releases[0]}")
kernel_modules=$work/kernel/lib/modules/$kernel_release
[ -f "$work/kernel/boot/vmlinuz-$kernel_release" ] || die "no /boot/vmlinuz-$kernel_release in $(basename "$kernel_deb")"
# Debian generates modules.dep in the package's postinst, so the extracted
# tree has none yet.
depmod -b "$work/kernel" "$kernel_release"

root=$work/initramfs
mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,host,job} "$root/lib/modules/$kernel_release"

cp "$busybox_path" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done

# `modprobe --show-depends` prints the insmod commands in load order;
# -C /dev/null keeps the host's /etc/modprobe.d (options, blacklists) out.
: >"$root/etc/farm-vm-modules"
declare -A modules_seen=()
for module in "${modules_wanted[@]}"; do
    lines=$(modprobe -C /dev/null -d "$work/kernel" -S "$kernel_release" --show-depends "$module") ||
        die "module $module is not in $kernel_release"
    while read -r verb path _; do
        [ "$verb" = insmod ] || continue
        relative=${path#"$kernel_modules"/}
        # busybox insmod cannot read zstd or xz modules; store them plain.
        case "$relative" in
        *.ko) decompress=(cat) ;;
        *.ko.xz) decompress=(xz -dc) ;;
        *.ko.zst) decompress=(zstd -dcq) ;;
        *.ko.gz) decompress=(gzip -dc) ;;
        *) die "unexpected module file $relative" ;;
        esac
        relative=${relative%.xz}
        relative=${relative%.zst}
        relative=${relative%.gz}
        [ -z "${modules_seen[$relative]:-}" ] || continue
        modules_seen[$relative]=1
        mkdir -p "$(dirname "$root/lib/modules/$kernel_release/$relative")"
        "${decompress[@]}" "$path" >"$root/lib/modules/$kernel_release/$relative"
        name=$(basename "$relative" .ko)
        echo "$relative ${module_parameters[$name]:-}" >>"$root/etc/farm-vm-modules"
    done <<<"$lines"
done
cp "$kernel_modules"/modules.builtin* "$kernel_modules/modules.order" "$root/lib/modules/$kernel_release/" 2>/dev/null || true
# A modules.dep that matches the modules shipped, for modprobe/modinfo by
# hand when debugging inside the VM.
depmod -b "$root" "$kernel_release"

install -m 0755 "$here/init" "$root/init"

# newc is the format the kernel unpacks; a sorted file list and fixed owner
# keep the archive the same from one build to the next.
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --quiet) |
    gzip -9n >"$work/initramfs.cpio.gz"

cp "$work/kernel/boot/vmlinuz-$kernel_release" "$work/vmlinuz"
mv "$work/vmlinuz" "$cache/vmlinuz"
mv "$work/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
echo "$kernel_release" >"$cache/kernel-release"
echo "$stamp" >"$cache/initramfs.stamp"
echo "$program: kernel $kernel_release, initramfs $(du -h "$cache/initramfs.cpio.gz" | cut -f1)" >&2
