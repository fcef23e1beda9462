#!/usr/bin/env bash
# What kubelet and CRI-O do for `POST /checkpoint/{namespace}/{pod}/{container}`
# with stasis as CRI-O's runtime, done locally without a cluster (the same
# steps as integration/tests/kubernetes.rs), then a restore from kubelet's
# archive on a fresh copy of the image, under a new id:
#   1. a busybox container whose rootfs is an overlay mount, as CRI-O gives;
#      it writes /etc/k8s-note and deletes /etc/group, then counts;
#   2. CRI-O: pause, `checkpoint --file-locks --image-path <ctrDir>/checkpoint
#      --work-path <ctrDir> --leave-running` (+ --export: the archive CRI-O
#      hands to kubelet), resume;
#   3. the archive, in kubelet's place and name, is listed;
#   4. `restore --import` onto a new overlay with an empty upper: the counter
#      goes on, the note is there, /etc/group is gone.
# The steps for a real cluster are in examples/kubernetes.md.
# Needs root, runc, /bin/busybox, jq and a built stasis (`make build`).
set -euo pipefail
cd "$(dirname "$0")/.."

STASIS=${STASIS:-$PWD/target/x86_64-unknown-linux-gnu/release/stasis}
WORK=$(mktemp -d /tmp/stasis-k8s.XXXXXX)
ROOT=$WORK/runtime-root            # CRI-O's runtime_root for the handler
IMAGE=$WORK/image                  # the busybox image: the overlays' lower layer
KUBELET=$WORK/var-lib-kubelet      # kubelet's --root-dir
ID=stasis-k8s-$$
ID2=stasis-k8s-restored-$$

st() {
  echo "+ stasis $*" >&2
  "$STASIS" --root "$ROOT" "$@"
}

cleanup() {
  for id in "$ID" "$ID2"; do "$STASIS" --root "$ROOT" delete --force "$id" >/dev/null 2>&1 || true; done
  for m in "$WORK"/ov*/merged; do umount "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A fresh copy of the image for a container: an overlay with an empty upper.
overlay() {
  mkdir -p "$WORK/$1"/{upper,work,merged}
  mount -t overlay overlay \
    -o "lowerdir=$IMAGE,upperdir=$WORK/$1/upper,workdir=$WORK/$1/work" "$WORK/$1/merged"
  echo "$WORK/$1/merged"
}

# The image, and a config with what CRI-O puts in it (checkpointctl reads
# the annotations from spec.dump).
mkdir -p "$IMAGE"/{bin,dev,etc,proc,sys,tmp}
cp /bin/busybox "$IMAGE/bin/"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$IMAGE/bin/$applet"
done
echo 'root:x:0:' > "$IMAGE/etc/group"
mkdir -p "$WORK/ctr1"
runc spec --bundle "$WORK/ctr1"
ROOTFS1=$(overlay ov1)
jq --arg root "$ROOTFS1" '.process.terminal = false
    | .process.args = ["sh", "-c", "echo written before the checkpoint > /etc/k8s-note; rm /etc/group; i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 1; done"]
    | .root = {path: $root, readonly: false}
    | .annotations = {
        "io.container.manager": "cri-o",
        "io.kubernetes.cri-o.Metadata": "{\"name\":\"counter\",\"attempt\":0}",
        "io.kubernetes.cri-o.Name": "k8s_counter_demo_default_0_0",
        "io.kubernetes.cri-o.ImageName": "docker.io/library/busybox:latest",
        "io.kubernetes.pod.name": "demo", "io.kubernetes.pod.namespace": "default",
        "io.kubernetes.container.name": "counter"}' \
  "$WORK/ctr1/config.json" > "$WORK/config.json"
mv "$WORK/config.json" "$WORK/ctr1/config.json"

echo "+ stasis run -d --bundle $WORK/ctr1 $ID" >&2
"$STASIS" --root "$ROOT" run -d --bundle "$WORK/ctr1" "$ID" </dev/null >"$WORK/out.log" 2>&1
sleep 2

# kubelet: POST /checkpoint/default/demo/counter → CRI-O CheckpointContainer.
mkdir -p "$KUBELET/checkpoints"
ARCHIVE=$KUBELET/checkpoints/checkpoint-demo_default-counter-$(date -u +%Y-%m-%dT%H:%M:%SZ).tar
st pause "$ID"
st checkpoint --file-locks --image-path "$WORK/ctr1/checkpoint" --work-path "$WORK/ctr1" \
  --leave-running --export "$ARCHIVE" "$ID"
before=$(cat "$ROOTFS1/tmp/counter")
echo "CRI-O sees state: $("$STASIS" --root "$ROOT" state "$ID" | jq -r .status)"
st resume "$ID"
echo "kubelet answers: $(jq -cn --arg a "$ARCHIVE" '{items: [$a]}')"
tar -tvf "$ARCHIVE"
tar -xOf "$ARCHIVE" config.dump; echo
echo "deleted.files: $(tar -xOf "$ARCHIVE" deleted.files)"
st kill "$ID" KILL
sleep 0.5
st delete --force "$ID"

# Restore on a fresh copy of the image, config from spec.dump, new id.
mkdir -p "$WORK/ctr2"
ROOTFS2=$(overlay ov2)
tar -xOf "$ARCHIVE" spec.dump | jq --arg root "$ROOTFS2" '.root.path = $root' > "$WORK/ctr2/config.json"
echo "+ stasis restore --bundle $WORK/ctr2 --detach --import $ARCHIVE ... $ID2" >&2
"$STASIS" --root "$ROOT" restore --bundle "$WORK/ctr2" --pid-file "$WORK/ctr2/pidfile" --detach \
  --import "$ARCHIVE" --work-path "$WORK/ctr2" "$ID2" </dev/null >"$WORK/out2.log" 2>&1 \
  || { cat "$WORK/out2.log" >&2; exit 1; }
sleep 2.5
after=$(cat "$ROOTFS2/tmp/counter")
echo "counter after restore: $after (checkpointed at $before)"
note=$(st exec "$ID2" cat /etc/k8s-note)
echo "/etc/k8s-note in the restored container: $note"
if [ "$after" -le "$before" ] || [ "$note" != "written before the checkpoint" ] \
   || st exec "$ID2" test -e /etc/group; then
  echo "kubernetes example: the restored container is not what was checkpointed" >&2
  exit 1
fi
st delete --force "$ID2"
echo "kubernetes example: ok"
