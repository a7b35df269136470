#!/usr/bin/env bash
# Runs one command inside a freshly booted VM that has a soft-RoCE device,
# for hosts whose kernel has no rdma_rxe (see ../host.sh for those that do).
#
#   soft-roce-setup/vm/run.sh CMD [ARGS...]
#
# Contract:
#   - inside the VM, rxe0 (on dummy netdev d0, 10.99.0.1/24) is ACTIVE and lo
#     is up; the host's root file system is the VM's root (9p, read-write),
#     so every host binary and library is there and files the command writes
#     land on the host; /tmp is a tmpfs private to the VM;
#   - CMD runs as root in the same working directory, with the same PATH
#     behind $REPO/target/release and $REPO/target/debug, with the
#     environment variables named below passed through, and with
#     FARM_RXE_DEVICE, FARM_RXE_GID_INDEX and FARM_RXE_IPV4 set; stdin is
#     empty;
#   - CMD's stdout and stderr stream to run.sh's stdout and stderr (kernel
#     and boot messages go to $REPO/target/softroce/last-console.log);
#   - run.sh exits with CMD's exit status; 124 if FARM_VM_TIMEOUT ran out;
#     125 if the VM could not boot or set up rxe0, or run.sh itself failed.
#
# Environment:
#   FARM_VM_TIMEOUT   seconds before qemu is killed (default 1800)
#   FARM_VM_MEM       guest memory in MiB (default 2048)
#   FARM_VM_CPUS      guest CPUs (default 2)
#   FARM_VM_ACCEL     qemu accelerator (default tcg; kvm where it works)
#   FARM_VM_ENV       extra variable names to pass through, space-separated
#   FARM_VM_VERBOSE   1: show the kernel's boot messages on stderr as well
# Passed through always: RUST_*, RUSTFLAGS, RUSTDOCFLAGS, CARGO_*, RUSTUP_*,
# FARM_*, HOME, USER, LOGNAME, LANG, LC_*, TZ.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=$repo/target/softroce
program=soft-roce-setup/vm/run.sh

# Exit statuses of run.sh itself; everything else is the command's.
status_timeout=124
status_vm_failed=125

fail() {
    echo "$program: $*" >&2
    exit "$status_vm_failed"
}

if [ $# -eq 0 ]; then
    echo "usage: $program CMD [ARGS...]" >&2
    exit "$status_vm_failed"
fi

positive_integer() {
    case "$2" in
    '' | *[!0-9]* | 0*) fail "$1 must be a positive integer, not '$2'" ;;
    esac
}
timeout_s=${FARM_VM_TIMEOUT:-1800}
memory_mib=${FARM_VM_MEM:-2048}
cpu_count=${FARM_VM_CPUS:-2}
accelerator=${FARM_VM_ACCEL:-tcg}
verbose=${FARM_VM_VERBOSE:-0}
positive_integer FARM_VM_TIMEOUT "$timeout_s"
positive_integer FARM_VM_MEM "$memory_mib"
positive_integer FARM_VM_CPUS "$cpu_count"

# /tmp inside the VM is a fresh tmpfs; init binds the top directory of a
# working directory under /tmp back in (it reads the job share's `cwd`).

"$here/../install-deps.sh" || fail "install-deps.sh failed"
"$here/build.sh" || fail "build.sh failed"

mkdir -p "$cache"
run_dir=$(mktemp -d "$cache/run.XXXXXX")
share=$run_dir/share # the "farmjob" 9p share: job.sh in, status out
mkdir "$share"
printf '%s\n' "$PWD" >"$share/cwd"

qemu_pid=
reader_pids=()
cleanup() {
    if [ -n "$qemu_pid" ]; then
        kill "$qemu_pid" 2>/dev/null || true
    fi
    for pid in "${reader_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [ -f "$run_dir/console.log" ]; then
        cp "$run_dir/console.log" "$cache/last-console.log" 2>/dev/null || true
    fi
    rm -rf "$run_dir"
}
trap cleanup EXIT
# The EXIT trap kills qemu; 130/143 follow the shell's convention.
trap 'exit 130' INT
trap 'exit 143' TERM

# --- The job: a bash script the VM's init runs inside `chroot /host`. ---
# printf %q quotes every word so that spaces, quotes and newlines in the
# arguments and in the environment reach the command unchanged.
pass_names=()
for name in $(compgen -e); do
    case "$name" in
    RUST_* | RUSTFLAGS | RUSTDOCFLAGS | CARGO_* | RUSTUP_* | FARM_* | HOME | USER | LOGNAME | LANG | LC_* | TZ)
        pass_names+=("$name")
        ;;
    esac
done
for name in ${FARM_VM_ENV:-}; do
    if [ -n "${!name+set}" ]; then
        pass_names+=("$name")
    fi
done
{
    echo "# Written by $program; run by the VM's init."
    printf 'cd -- %q || { echo %q >&2; exit %d; }\n' "$PWD" \
        "$program: cannot enter $PWD inside the VM" "$status_vm_failed"
    printf 'export PATH=%q\n' "$repo/target/release:$repo/target/debug:$PATH"
    for name in "${pass_names[@]}"; do
        printf 'export %s=%q\n' "$name" "${!name}"
    done
    # Written by init: FARM_RXE_DEVICE, FARM_RXE_GID_INDEX, FARM_RXE_IPV4.
    echo '. /tmp/.farm-vm-env.sh'
    printf 'exec --'
    printf ' %q' "$@"
    printf '\n'
} >"$share/job.sh"

# --- Output: fifos read by cat, so the command's output streams through. ---
mkfifo "$run_dir/stdout.fifo" "$run_dir/stderr.fifo" "$run_dir/console.fifo"
cat <"$run_dir/stdout.fifo" &
reader_pids+=($!)
cat <"$run_dir/stderr.fifo" >&2 &
reader_pids+=($!)

# Microseconds since the epoch, for the progress notes.
now_us() {
    echo "${EPOCHREALTIME/./}"
}
boot_start_us=$(now_us)

# The console carries kernel messages and init's "FARM-VM:" lines: keep all
# of it in a log, and turn init's progress line into a note on stderr.
(
    while IFS= read -r line; do
        line=${line%$'\r'}
        printf '%s\n' "$line" >>"$run_dir/console.log"
        if [ "$verbose" = 1 ]; then
            printf 'console: %s\n' "$line" >&2
        fi
        case "$line" in
        "FARM-VM: rxe0-up"*)
            elapsed_us=$(($(now_us) - boot_start_us))
            printf '%s: rxe0 up after %d.%01d s (%s)\n' "$program" \
                $((elapsed_us / 1000000)) $((elapsed_us % 1000000 / 100000)) \
                "${line#FARM-VM: rxe0-up }" >&2
            ;;
        esac
    done <"$run_dir/console.fifo"
) &
reader_pids+=($!)

# Hold the write ends open ourselves: the readers' open() cannot then block
# forever if qemu dies before it opens the fifos, and they see end-of-file
# only when both qemu and we have closed them.
exec 7>"$run_dir/stdout.fifo" 8>"$run_dir/stderr.fifo" 6>"$run_dir/console.fifo"

# The 9p server needs root to store file owners and modes as they are
# (passthrough); an unprivileged user gets plain files (none).
if [ "$(id -u)" -eq 0 ]; then
    security_model=passthrough
else
    security_model=none
fi

accelerator_options=(-accel "$accelerator")
cpu_model=max
if [ "$accelerator" = tcg ]; then
    # One host thread per guest CPU; the default would serialise them.
    accelerator_options=(-accel tcg,thread=multi)
elif [ "$accelerator" = kvm ]; then
    cpu_model=host
fi

# quiet: every console byte costs time under TCG, and run.sh hides the
# console anyway. panic=-1: a panic reboots, which -no-reboot turns into
# qemu exiting instead of hanging until FARM_VM_TIMEOUT.
kernel_command_line="console=ttyS0 panic=-1"
if [ "$verbose" != 1 ]; then
    kernel_command_line+=" quiet"
fi

qemu_command=(
    qemu-system-x86_64
    "${accelerator_options[@]}" -cpu "$cpu_model"
    -m "$memory_mib" -smp "$cpu_count"
    -nodefaults -no-user-config -display none -no-reboot -nic none
    -kernel "$cache/vmlinuz" -initrd "$cache/initramfs.cpio.gz"
    -append "$kernel_command_line"
    -chardev "file,id=console,path=$run_dir/console.fifo"
    -serial chardev:console
    # multidevs=remap: / spans several host file systems, whose inode
    # numbers would otherwise collide inside the guest.
    -fsdev "local,id=hostroot,path=/,security_model=$security_model,multidevs=remap"
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
    -fsdev "local,id=farmjob,path=$share,security_model=$security_model"
    -device virtio-9p-pci,fsdev=farmjob,mount_tag=farmjob
    -device virtio-serial-pci
    -chardev "file,id=stdout,path=$run_dir/stdout.fifo"
    -device virtserialport,chardev=stdout,name=farm.stdout
    -chardev "file,id=stderr,path=$run_dir/stderr.fifo"
    -device virtserialport,chardev=stderr,name=farm.stderr
)

echo "$program: booting soft-RoCE VM ($cpu_count CPUs, $memory_mib MiB, $accelerator)..." >&2
# timeout(1) sends TERM at the limit and KILL 10 s later if qemu lingers.
timeout --kill-after=10 "$timeout_s" "${qemu_command[@]}" \
    </dev/null 6>&- 7>&- 8>&- 2>"$run_dir/qemu.log" &
qemu_pid=$!
qemu_status=0
wait "$qemu_pid" || qemu_status=$?
qemu_pid=

# Let the readers drain what is left, then stop.
exec 6>&- 7>&- 8>&-
for pid in "${reader_pids[@]}"; do
    wait "$pid" || true
done
reader_pids=()

show_logs() {
    if [ -s "$run_dir/qemu.log" ]; then
        echo "--- qemu said:" >&2
        tail -n 20 "$run_dir/qemu.log" >&2
    fi
    if [ -s "$run_dir/console.log" ]; then
        echo "--- last console lines (all of it: $cache/last-console.log):" >&2
        tail -n 25 "$run_dir/console.log" >&2
    fi
}

if [ "$qemu_status" -eq 124 ] || [ "$qemu_status" -eq 137 ]; then
    echo "$program: timed out after $timeout_s s (FARM_VM_TIMEOUT); VM killed" >&2
    exit "$status_timeout"
fi
if [ -f "$share/status" ]; then
    status=$(cat "$share/status")
    case "$status" in
    '' | *[!0-9]*) fail "unreadable exit status '$status' from the VM" ;;
    esac
    exit "$status"
fi
if grep -q '^FARM-VM: error' "$run_dir/console.log" 2>/dev/null; then
    echo "$program: VM setup failed: $(sed -n 's/^FARM-VM: error //p' "$run_dir/console.log" | head -n 1)" >&2
elif grep -q '^FARM-VM: rxe0-up' "$run_dir/console.log" 2>/dev/null; then
    echo "$program: the VM stopped before the command finished (kernel panic or out of memory? try FARM_VM_MEM)" >&2
elif [ ! -s "$run_dir/console.log" ]; then
    echo "$program: the VM failed to boot and printed nothing (qemu exit status $qemu_status; too little FARM_VM_MEM? rerun with FARM_VM_VERBOSE=1)" >&2
else
    echo "$program: the VM failed to boot (qemu exit status $qemu_status; rerun with FARM_VM_VERBOSE=1 for all boot messages)" >&2
fi
show_logs
exit "$status_vm_failed"
