#!/usr/bin/env bash
# containerd drives stasis: a private containerd (Debian 12's 1.6.20, its runc
# v2 shim with `--runc-binary` = stasis), a busybox image built offline and
# imported, `ctr run -d`, `ctr container checkpoint --task`, the original
# removed, `ctr container restore --live` into a new container whose shell
# counter goes on from where it was. Everything is removed at the end.
# Needs root, containerd, /bin/busybox and a built stasis (make deps build).
set -euo pipefail
cd "$(dirname "$0")/.."

STASIS=${STASIS:-$PWD/target/x86_64-unknown-linux-gnu/release/stasis}
WORK=$(mktemp -d /tmp/stasis-ctd.XXXXXX)
NS=stasis-example-$$                       # ctr namespace (and cgroup parent)
IMAGE=docker.io/stasis/busybox:example
CKPT=docker.io/stasis/checkpoint:example
CTD_PID=
[ -x "$STASIS" ] || { echo "no stasis at $STASIS: run make build, or set STASIS" >&2; exit 1; }
command -v containerd >/dev/null || { echo "containerd is missing: make deps (apt-get install containerd)" >&2; exit 1; }

ctr() {
  echo "+ ctr $*" >&2
  command ctr --address "$WORK/ctd.sock" --namespace "$NS" "$@"
}
q() { command ctr --address "$WORK/ctd.sock" --namespace "$NS" "$@" 2>/dev/null || true; }

cleanup() {
  if [ -n "$CTD_PID" ]; then
    for id in $(q tasks ls -q); do q tasks delete --force "$id" >/dev/null; done
    for id in $(q containers ls -q); do q containers delete "$id" >/dev/null; done
    kill "$CTD_PID" 2>/dev/null && wait "$CTD_PID" 2>/dev/null || true
  fi
  grep -o " $WORK/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  for d in /sys/fs/cgroup/*/"$NS" /sys/fs/cgroup/"$NS"; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# 1. A containerd of our own: private root, state, socket and temp dir.
mkdir -p "$WORK"/{tmp,runc}
cat >"$WORK/config.toml" <<EOF
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/ctd.sock"
[ttrpc]
  address = "$WORK/ctd.sock.ttrpc"
[debug]
  address = "$WORK/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/opt"
EOF
XDG_RUNTIME_DIR=$WORK/tmp TMPDIR=$WORK/tmp containerd --config "$WORK/config.toml" \
  </dev/null >"$WORK/containerd.log" 2>&1 &
CTD_PID=$!
for _ in $(seq 100); do q version | grep -q Server: && break; sleep 0.1; done

# 2. A busybox image as an OCI layout archive (no registry needed).
L=$WORK/layout
mkdir -p "$WORK"/rootfs/{bin,dev,etc,proc,sys,tmp} "$L/blobs/sha256"
cp /bin/busybox "$WORK/rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$WORK/rootfs/bin/$a"; done
blob() {  # blob FILE -> prints "sha256:HEX SIZE" and stores it
  local hex; hex=$(sha256sum "$1" | cut -d' ' -f1)
  cp "$1" "$L/blobs/sha256/$hex"; echo "sha256:$hex $(stat -c %s "$1")"
}
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$WORK/rootfs" -cf "$WORK/layer.tar" .
read -r LD LS < <(blob "$WORK/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
  "$LD" >"$WORK/config.json"
read -r CD CS < <(blob "$WORK/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
  "$CD" "$CS" "$LD" "$LS" >"$WORK/manifest.json"
read -r MD MS < <(blob "$WORK/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$MD" "$MS" "$IMAGE" >"$L/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
tar -C "$L" -cf "$WORK/image.tar" .
ctr images import "$WORK/image.tar"

# 3. Run with stasis as the runtime binary: a shell whose counter lives in
#    its memory (the file is only a window on it).
ctr run -d --runc-binary "$STASIS" --runc-root "$WORK/runc" --log-uri "file://$WORK/demo.log" \
  "$IMAGE" demo sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done'
sleep 2
count() { q tasks exec --exec-id "peek$RANDOM" "$1" cat /tmp/count; }

# 4. Checkpoint the container (task, rw layer and image reference); the
#    task keeps running. Then remove the original.
echo "demo counts: $(count demo)"
ctr containers checkpoint --task --rw --image demo "$CKPT"
echo "checkpointed; demo still counts: $(count demo)"
ctr tasks kill --signal SIGKILL demo
sleep 0.5
ctr tasks delete demo
ctr containers delete demo

# 5. Restore into a new container: the shim runs `stasis restore` at task
#    start; runtime and BinaryName come from the checkpoint.
ctr containers restore --live --rw demo2 "$CKPT" >"$WORK/restore.out"
ctr tasks ls
first=$(count demo2)
sleep 1
echo "restored demo2 counts on from the checkpoint: $first, then $(count demo2)"
ctr tasks ps demo2

# 6. Done: kill and delete (the trap removes the daemon and its files).
ctr tasks kill --signal SIGKILL demo2
sleep 0.5
ctr tasks delete demo2
ctr containers delete demo2
