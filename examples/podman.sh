#!/usr/bin/env bash
# podman with stasis as its OCI runtime: run a busybox counter, checkpoint it
# (leaving it running, then stopping it), restore it in place, export it to
# an archive and import that under a new name. The counter lives in a shell
# variable, so it can only go on from where it was if its memory came back.
# Needs root, podman (with conmon), criu (podman checks that it is
# installed, stasis never runs it), busybox-static and a built stasis.
# Uses a private podman storage under a temp dir: no registry, and the
# machine's podman containers and images are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."

STASIS=${STASIS:-$PWD/target/x86_64-unknown-linux-gnu/release/stasis}
WORK=$(mktemp -d /tmp/stasis-podman.XXXXXX)
NAME=stasis-podman-$$
IMAGE=localhost/stasis-busybox:$$

# --log-format=json --log go only to runtimes listed here. Podman's default
# limits (nofile 1048576, nproc 32768) need CAP_SYS_RESOURCE when this
# shell's hard limits are lower: never ask for more than those.
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ] && nofile=1048576
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"
[engine]
runtime_supports_json = ["crun", "runc", "stasis"]
EOF
pm() {
  echo "+ podman $*" >&2
  CONTAINERS_CONF=$WORK/containers.conf podman --root "$WORK/root" --runroot "$WORK/runroot" \
    --tmpdir "$WORK/tmp" --storage-driver vfs --cgroup-manager cgroupfs --events-backend file "$@"
}
cleanup() {
  pm rm --all --force --time 0 >/dev/null 2>&1 || true
  pm rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
counter() { pm exec "$1" cat /tmp/counter; }

# An image made offline from busybox-static.
mkdir -p "$WORK"/rootfs/{bin,dev,etc,proc,sys,tmp,root}
cp /bin/busybox "$WORK/rootfs/bin/"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$WORK/rootfs/bin/$applet"
done
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
pm import "$WORK/rootfs.tar" "$IMAGE" >/dev/null

# The container is bound to stasis: later commands on it use stasis too.
pm --runtime "$STASIS" run -d --name "$NAME" --network none "$IMAGE" \
  sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; echo $i; sleep 0.5; done'
sleep 2
pm container checkpoint --leave-running "$NAME"
echo "still running after checkpoint --leave-running: counter $(counter "$NAME")"

pm container checkpoint --print-stats "$NAME"
before=$(pm logs "$NAME" | tail -1)
pm container restore "$NAME"
sleep 1.5
after=$(counter "$NAME")
echo "restored in place: counter $after (checkpointed at $before)"
[ "$after" -gt "$before" ]

# Rootfs changes travel in the archive (rootfs-diff.tar).
pm exec "$NAME" sh -c 'echo written before export > /root/note'
pm container checkpoint --export "$WORK/ckpt.tar.zst" "$NAME"
before=$(pm logs "$NAME" | tail -1)
pm container restore --import "$WORK/ckpt.tar.zst" --name "$NAME-copy"
sleep 1.5
after=$(counter "$NAME-copy")
echo "imported as $NAME-copy: counter $after (exported at $before), /root/note: $(pm exec "$NAME-copy" cat /root/note)"
[ "$after" -gt "$before" ]
pm ps
pm rm --force --time 0 "$NAME" "$NAME-copy" >/dev/null
echo "podman example: ok"
