#!/bin/sh
# Runs a command with a fault, for the fault tests (test/e2e/daemon/{mount,memory}-faults.test.ts):
#   with-fault.sh ro-proc-sys -- CMD...    /proc/sys read-only (sysctl writes fail with EROFS)
#   with-fault.sh full DIR SIZE -- CMD...  DIR a tmpfs of SIZE, filled (writes fail with ENOSPC)
#   with-fault.sh cgroup PROCS -- CMD...  CMD in the cgroup whose cgroup.procs file is PROCS
# The mount modes are always started by `unshare --mount --propagation private`, so the mounts
# exist only in that new mount namespace and go away with its last process; the cgroup is one
# the test created (test/support/cgroup.ts) and removes. Nothing on the host changes.
set -eu
mode=$1
shift
case "$mode" in
ro-proc-sys)
  mount --bind /proc/sys /proc/sys
  mount -o remount,bind,ro /proc/sys
  ;;
full)
  mount -t tmpfs -o "size=$2,mode=1777" kpt-full "$1"
  dd if=/dev/zero of="$1/fill" bs=4096 2>/dev/null || true
  shift 2
  ;;
cgroup)
  echo $$ >"$1"
  shift
  ;;
*)
  echo "with-fault.sh: unknown mode $mode" >&2
  exit 2
  ;;
esac
[ "$1" = "--" ] && shift
exec "$@"
