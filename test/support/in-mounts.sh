#!/bin/sh
# Runs a command with a mount fault, for the fault tests (test/e2e/daemon/mount-faults.test.ts):
#   in-mounts.sh ro-proc-sys -- CMD...    /proc/sys read-only (sysctl writes fail with EROFS)
#   in-mounts.sh full DIR SIZE -- CMD...  DIR a tmpfs of SIZE, filled (writes fail with ENOSPC)
# Always started by `unshare --mount --propagation private`, so the mounts exist only in that
# new mount namespace and go away with its last process; nothing on the host changes.
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
*)
  echo "in-mounts.sh: unknown mode $mode" >&2
  exit 2
  ;;
esac
[ "$1" = "--" ] && shift
exec "$@"
