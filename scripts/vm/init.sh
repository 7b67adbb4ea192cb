#!/bin/busybox sh
# PID 1 of the ipvs VM (scripts/vm/build-image.sh packs it as /init): mounts, loads the modules of
# modules.list, runs every scenario in one node:test process whose reporter writes one
# `KPT-VM test {json}` line per test to the serial console, then powers off. The host side
# (test/vm/ipvs.test.ts) reads these lines; `KPT-VM done` is the end marker.
# Kernel command-line words of the form KEY=VALUE arrive here as environment variables:
# KPT_VM_ONLY (a test name pattern) narrows the run; KPT_VM_MAIN=NAME runs test-vm/NAME.js instead
# of the scenarios (the scale lab's ipvs series: datapath).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /root /run/netns
echo "KPT-VM booted uptime=$(cut -d' ' -f1 /proc/uptime)"
failed=""
while read -r m; do
  modprobe "$m" || failed="$failed $m"
done </etc/modules.order
[ -z "$failed" ] || echo "KPT-VM modules-failed$failed"
ip link set lo up
echo "KPT-VM modules-loaded uptime=$(cut -d' ' -f1 /proc/uptime)"
cd /opt/kpt
main=./test-vm/main.js
[ -z "${KPT_VM_MAIN:-}" ] || main=./test-vm/${KPT_VM_MAIN##*/}.js
if [ -n "${KPT_VM_ONLY:-}" ]; then
  node --test-reporter=./test-vm/reporter.js --test-name-pattern="$KPT_VM_ONLY" "$main"
else
  node --test-reporter=./test-vm/reporter.js "$main"
fi
rc=$?
echo "KPT-VM done rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
