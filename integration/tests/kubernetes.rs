//! The Kubernetes checkpoint path, played without a cluster: what kubelet
//! and CRI-O do for `POST /checkpoint/{namespace}/{pod}/{container}` with
//! stasis as CRI-O's runtime, then a restore from the archive kubelet keeps.
//!
//! The container is set up as CRI-O sets one up: its rootfs an overlay
//! mount (lower: the busybox image, upper/work: the container's own), its
//! config.json carrying CRI-O's annotations. The checkpoint uses CRI-O's
//! runtime argv (pause; `checkpoint --file-locks --image-path
//! <ctrDir>/checkpoint --work-path <ctrDir> --leave-running <id>`, here with
//! `--export <archive>`: stasis writes the archive CRI-O would; state;
//! resume). The restore goes onto a fresh copy of the image (a new overlay,
//! empty upper) under a new id, with a config made from the archive's
//! `spec.dump` as CRI-O makes it, and `--import`. The counter workload then
//! checks its own memory and goes on counting from where it was, and the
//! files it wrote to (and deleted from) its rootfs before the checkpoint are
//! there (and gone). Hostile or truncated archives are refused, leaving
//! nothing behind.

#[allow(dead_code)] // the helpers are shared by several tests
mod cr;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cr::*;
use serde_json::{json, Value};
use stasis_integration::{unique_id, Runtime, TempDir};

/// An overlay mount of the image `lower` with its own upper and work dirs,
/// unmounted on drop.
struct Overlay {
    merged: PathBuf,
    upper: PathBuf,
}

impl Overlay {
    fn mount(lower: &Path, dir: &Path, extra: &str) -> Self {
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).unwrap();
        }
        let opts = format!("lowerdir={},upperdir={},workdir={}{extra}", lower.display(), upper.display(), work.display());
        nix::mount::mount(Some("overlay"), &merged, Some("overlay"), nix::mount::MsFlags::empty(), Some(opts.as_str()))
            .unwrap_or_else(|e| panic!("mount overlay on {}: {e}", merged.display()));
        Self { merged, upper }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// CRI-O's annotations on a container's config.json (what checkpointctl
/// reads from spec.dump).
fn crio_annotations(pod: &str, ns: &str, container: &str) -> Value {
    json!({
        "io.container.manager": "cri-o",
        "io.kubernetes.cri-o.Metadata": json!({"name": container, "attempt": 0}).to_string(),
        "io.kubernetes.cri-o.Name": format!("k8s_{container}_{pod}_{ns}_0d8f6f3c_0"),
        "io.kubernetes.cri-o.ImageName": "docker.io/library/busybox:latest",
        "io.kubernetes.cri-o.ImageRef": "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741",
        "io.kubernetes.cri-o.Created": "2026-11-23T10:00:00.000000000Z",
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.pod.namespace": ns,
        "io.kubernetes.container.name": container,
    })
}

/// A bundle directory `dir` whose config is `config` with root.path = `rootfs`.
fn write_bundle(dir: &Path, mut config: Value, rootfs: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    config["root"]["path"] = json!(rootfs);
    fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    dir.to_path_buf()
}

fn progress_in(rootfs: &Path) -> Option<Progress> {
    Progress::parse(&fs::read_to_string(rootfs.join("tmp/state")).ok()?)
}

#[track_caller]
fn wait_past(rootfs: &Path, iter: u64) -> Progress {
    let start = Instant::now();
    loop {
        if let Some(p) = progress_in(rootfs).filter(|p| p.iter > iter) {
            return p;
        }
        assert!(start.elapsed() < WAIT, "counter not past {iter}: {:?}", progress_in(rootfs));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What kubelet + CRI-O do for `POST /checkpoint/{ns}/{pod}/{container}`:
/// returns kubelet's answer, `{"items":[archive]}`, and the counter's
/// progress while it was paused for the checkpoint (`rootfs`).
#[allow(clippy::too_many_arguments)]
fn kubelet_checkpoint(
    rt: &Runtime,
    kubelet_root: &Path,
    ctr_dir: &Path,
    rootfs: &Path,
    id: &str,
    (ns, pod, container): (&str, &str, &str),
) -> (Value, Progress) {
    // kubelet: the archive's name and place (pkg/kubelet/kubelet.go).
    let stamp = rfc3339_now();
    let checkpoints = kubelet_root.join("checkpoints");
    fs::create_dir_all(&checkpoints).unwrap();
    let archive = checkpoints.join(format!("checkpoint-{pod}_{ns}-{container}-{stamp}.tar"));
    // CRI-O: pause, checkpoint (its runtime argv, plus the archive), state, resume.
    rt.exec(&["pause", id]).ok();
    let image = ctr_dir.join("checkpoint");
    rt.exec(&argv(&[
        &"checkpoint", &"--file-locks", &"--image-path", &image, &"--work-path", &ctr_dir, &"--leave-running",
        &"--export", &archive, &id,
    ]))
    .ok();
    assert_eq!(rt.state(id)["status"], "paused", "a leave-running checkpoint keeps a paused container paused");
    let at = progress_in(rootfs).expect("the counter's state");
    rt.exec(&["resume", id]).ok();
    // CRI-O's own files: the image and the work files stay in ctrDir.
    assert!(image.join("inventory.img").is_file() && ctr_dir.join("dump.log").is_file() && ctr_dir.join("stats-dump").is_file());
    (json!({ "items": [archive] }), at)
}

/// Now, as Go's time.RFC3339 (what kubelet puts in the archive's name).
fn rfc3339_now() -> String {
    let out = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ").output().expect("date");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every path under `root` (for "nothing was written" checks).
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// The archive's entries in order: (path, is_dir, contents of small files).
fn entries(archive: &Path) -> Vec<(String, bool, Vec<u8>)> {
    let mut ar = tar::Archive::new(fs::File::open(archive).unwrap());
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        let is_dir = e.header().entry_type().is_dir();
        let mut data = Vec::new();
        if e.size() < 1 << 20 {
            e.read_to_end(&mut data).unwrap();
        }
        out.push((path, is_dir, data));
    }
    out
}

fn entry<'a>(list: &'a [(String, bool, Vec<u8>)], name: &str) -> &'a [u8] {
    &list.iter().find(|(p, _, _)| p == name).unwrap_or_else(|| panic!("{name} not in the archive: {:?}", names(list))).2
}

fn names(list: &[(String, bool, Vec<u8>)]) -> Vec<&str> {
    list.iter().map(|(p, _, _)| p.as_str()).collect()
}

#[track_caller]
fn check_archive(archive: &Path, id: &str) {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(archive).unwrap().permissions().mode() & 0o777, 0o600, "the archive holds memory: 0600");
    let list = entries(archive);
    let n = names(&list);
    // checkpointctl needs the checkpoint/ directory entry; the image is flat.
    assert!(list.iter().any(|(p, d, _)| p == "checkpoint" && *d), "{n:?}");
    for f in ["checkpoint/inventory.img", "checkpoint/pages.img", "checkpoint/tree.img", "checkpoint/descriptors.json",
              "config.dump", "spec.dump", "rootfs-diff.tar", "deleted.files", "dump.log", "stats-dump"] {
        assert!(n.contains(&f), "{f} missing: {n:?}");
    }
    assert!(n.iter().filter(|p| p.starts_with("checkpoint/")).all(|p| p.matches('/').count() == 1), "{n:?}");
    assert_eq!(n.last(), Some(&"checkpoint/inventory.img"), "inventory.img last");
    // config.dump: the fields `checkpointctl show` prints.
    let config: Value = serde_json::from_slice(entry(&list, "config.dump")).unwrap();
    assert_eq!(config["id"], id);
    assert_eq!(config["name"], "k8s_counter_demo_default_0d8f6f3c_0");
    assert_eq!(config["rootfsImageName"], "docker.io/library/busybox:latest");
    assert_eq!(config["runtime"], "stasis");
    assert_eq!(config["createdTime"], "2026-11-23T10:00:00.000000000Z");
    assert!(config["checkpointedTime"].as_str().is_some_and(|t| t.len() >= 20 && t.contains('T')), "{config}");
    // spec.dump: the container's spec, CRI-O's annotations (engine detection,
    // pod, namespace, container name) included.
    let spec: Value = serde_json::from_slice(entry(&list, "spec.dump")).unwrap();
    assert_eq!(spec["annotations"]["io.container.manager"], "cri-o");
    assert_eq!(spec["annotations"]["io.kubernetes.pod.name"], "demo");
    let meta: Value = serde_json::from_str(spec["annotations"]["io.kubernetes.cri-o.Metadata"].as_str().unwrap()).unwrap();
    assert_eq!(meta["name"], "counter");
    assert_eq!(spec["process"]["args"][0], "/bin/sh");
    // The rootfs diff: the file the container wrote, and the one it deleted.
    let deleted: Vec<String> = serde_json::from_slice(entry(&list, "deleted.files")).unwrap();
    assert_eq!(deleted, ["/etc/group", "/opt/data/a", "/opt/data/b", "/opt/tree"]);
    let mut diff = tar::Archive::new(entry(&list, "rootfs-diff.tar"));
    let mut found = None;
    for e in diff.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap() == Path::new("etc/k8s-note") {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            found = Some(s);
        }
    }
    assert_eq!(found.as_deref(), Some("written before the checkpoint\n"));
    let log = String::from_utf8_lossy(entry(&list, "dump.log")).into_owned();
    assert!(log.contains("dumped 1 processes"), "{log}");
}

/// Private directories left next to an archive.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".partial"))
        .collect()
}

#[test]
fn kubelet_checkpoint_and_restore_from_its_archive() {
    let (rt, image) = (Runtime::stasis(), counter_bundle());
    let dir = TempDir::new("stasis-k8s");
    // A directory of the image that the container replaces (overlayfs then
    // marks the new one opaque: what the image had in it is deleted).
    fs::create_dir_all(image.rootfs().join("opt/data")).unwrap();
    fs::write(image.rootfs().join("opt/data/a"), "a").unwrap();
    fs::write(image.rootfs().join("opt/data/b"), "b").unwrap();
    fs::create_dir_all(image.rootfs().join("opt/tree")).unwrap();
    fs::write(image.rootfs().join("opt/tree/x"), "in a renamed dir\n").unwrap();
    let (ns, pod, container) = ("default", "demo", "counter");
    // The image (lower) stays as built: the container writes to its upper.
    // The first with the options containers-storage may use: a chmod copies
    // up metadata only, a renamed directory stays in the lower layer.
    let ov1 = Overlay::mount(&image.rootfs(), &dir.path().join("ov1"), ",metacopy=on,redirect_dir=on");
    let ov2 = Overlay::mount(&image.rootfs(), &dir.path().join("ov2"), "");
    let mut config: Value = serde_json::from_slice(&fs::read(image.path().join("config.json")).unwrap()).unwrap();
    config["annotations"] = crio_annotations(pod, ns, container);
    config["process"]["args"] = json!([
        "/bin/sh", "-c",
        "echo 'written before the checkpoint' > /etc/k8s-note && rm /etc/group \
         && rm -r /opt/data && mkdir /opt/data && echo c > /opt/data/c \
         && chmod 600 /etc/passwd && mv /opt/tree /opt/renamed && exec /bin/counter"
    ]);
    let ctr_dir = dir.path().join("ctr1");
    let bundle1 = write_bundle(&ctr_dir, config, &ov1.merged);
    let (id1, id2) = (unique_id("k8s-ck"), unique_id("k8s-rs"));
    let _guards = [rt.adopt(&id1), rt.adopt(&id2)];
    let run = detached(&rt, &argv(&[&"run", &"-d", &"--bundle", &bundle1, &id1]));
    assert_eq!(run.code, 0, "run: {}", run.stderr);
    wait_past(&ov1.merged, 2);
    assert!(ov1.upper.join("etc/k8s-note").is_file(), "the write went to the container's upper dir");

    let (answer, at) =
        kubelet_checkpoint(&rt, &dir.path().join("kubelet"), &ctr_dir, &ov1.merged, &id1, (ns, pod, container));
    let archive = PathBuf::from(answer["items"][0].as_str().unwrap());
    assert!(archive.file_name().unwrap().to_string_lossy().starts_with("checkpoint-demo_default-counter-"));
    check_archive(&archive, &id1);
    assert_eq!(leftovers(archive.parent().unwrap()), Vec::<String>::new());
    // kubelet checkpoints leave the container running.
    wait_past(&ov1.merged, at.iter + 2);
    rt.exec(&["kill", &id1, "KILL"]).ok();
    rt.wait_status(&id1, "stopped", WAIT);
    rt.exec(&["delete", &id1]).ok();
    drop(run);

    // Restore as CRI-O does: a new container from spec.dump on a fresh
    // copy of the image (empty upper), under a new id; `--import` unpacks
    // the archive and applies its rootfs diff first.
    assert!(!ov2.merged.join("etc/k8s-note").exists() && ov2.merged.join("etc/group").exists());
    let spec: Value = serde_json::from_slice(entry(&entries(&archive), "spec.dump")).unwrap();
    let bundle2 = write_bundle(&dir.path().join("ctr2"), spec, &ov2.merged);
    let pid_file = bundle2.join("pidfile");
    let mut restored = detached(&rt, &argv(&[
        &"restore", &"--bundle", &bundle2, &"--pid-file", &pid_file, &"--detach", &"--import", &archive,
        &"--work-path", &bundle2, &id2,
    ]));
    assert_eq!(restored.code, 0, "restore: {}", restored.stderr);
    let first = Progress::parse(&restored.line()).expect("a counter line");
    assert!(first.iter == at.iter || first.iter == at.iter + 1, "{first:?} after {at:?}");
    assert_eq!((first.pid, first.errors), (1, 0));
    let later = wait_past(&ov2.merged, at.iter + 3);
    assert_eq!((later.pid, later.errors), (1, 0), "the counter's memory checks hold");
    let st = rt.state(&id2);
    assert_eq!(st["status"], "running");
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), st["pid"].to_string());
    // The rootfs changes came back, inside the container and in its new upper.
    let cat = rt.exec(&["exec", &id2, "cat", "/etc/k8s-note"]).ok();
    assert_eq!(cat.stdout, "written before the checkpoint\n");
    let gone = rt.exec(&["exec", &id2, "test", "-e", "/etc/group"]);
    assert_eq!(gone.code, 1, "the deleted /etc/group is gone: {gone:?}");
    let ls = rt.exec(&["exec", &id2, "ls", "/opt/data"]).ok();
    assert_eq!(ls.stdout, "c\n", "the replaced directory holds only what the container put there");
    let moved = rt.exec(&["exec", &id2, "sh", "-c", "cat /opt/renamed/x; stat -c %a /etc/passwd; cat /etc/passwd; test -e /opt/tree || echo no-tree"]).ok();
    assert_eq!(moved.stdout, "in a renamed dir\n600\nroot:x:0:0:root:/root:/bin/sh\nno-tree\n", "renamed dir and chmod'ed file");
    assert!(ov2.upper.join("etc/k8s-note").is_file());
    assert!(image.rootfs().join("etc/group").is_file(), "the image itself is untouched");
    assert!(bundle2.join("restore.log").is_file());
    assert_eq!(leftovers(archive.parent().unwrap()), Vec::<String>::new(), "the unpacked archive is removed");

    // The restored container checkpoints through kubelet again: its archive
    // has the caller's spec (not stasis' rewritten copy) and the same rootfs
    // changes, now in the new overlay's upper dir.
    let (again, _) =
        kubelet_checkpoint(&rt, &dir.path().join("kubelet2"), &bundle2, &ov2.merged, &id2, (ns, pod, container));
    check_archive(Path::new(again["items"][0].as_str().unwrap()), &id2);
    wait_past(&ov2.merged, later.iter + 2);
    rt.exec(&["kill", &id2, "KILL"]).ok();
    rt.wait_status(&id2, "stopped", WAIT);
    rt.exec(&["delete", &id2]).ok();
    drop(restored);
}

/// A tar with raw entry names (`..` included) and the given types.
fn forge(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// The entries of a real archive, re-packed with `extra` inserted first.
fn repack(full: &Path, extra: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut out = forge(extra);
    out.truncate(out.len() - 1024); // drop the end-of-archive blocks
    let mut b = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(fs::File::open(full).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    out.extend(b.into_inner().unwrap());
    out
}

#[test]
fn hostile_or_truncated_archives_are_refused_leaving_nothing() {
    let (rt, image) = (Runtime::stasis(), counter_bundle());
    let dir = TempDir::new("stasis-k8s-bad");
    let bundle = write_bundle(
        &dir.path().join("ctr"),
        serde_json::from_slice(&fs::read(image.path().join("config.json")).unwrap()).unwrap(),
        &image.rootfs(),
    );
    // A real archive to break: a plain-directory rootfs needs --rootfs-base.
    let id = unique_id("k8s-bad");
    let _guard = rt.adopt(&id);
    let base = dir.path().join("base");
    assert!(std::process::Command::new("cp").arg("-a").arg(image.rootfs()).arg(&base).status().unwrap().success());
    let run = detached(&rt, &argv(&[&"run", &"-d", &"--bundle", &bundle, &id]));
    assert_eq!(run.code, 0, "run: {}", run.stderr);
    wait_past(&image.rootfs(), 2);
    let good = dir.path().join("archives/good.tar");
    fs::create_dir_all(good.parent().unwrap()).unwrap();
    // Without a base, a plain directory rootfs is refused, the container untouched.
    let refused = rt.exec(&argv(&[&"checkpoint", &"--export", &good, &id]));
    assert!(refused.code == 1 && refused.stderr.contains("--rootfs-base"), "{refused:?}");
    assert_eq!(rt.state(&id)["status"], "running");
    assert!(!good.exists() && leftovers(good.parent().unwrap()).is_empty());
    rt.exec(&argv(&[&"checkpoint", &"--export", &good, &"--rootfs-base", &base, &id])).ok();
    drop(run);
    let list = entries(&good);
    assert!(names(&list).contains(&"rootfs-diff.tar"));
    let bytes = fs::read(&good).unwrap();
    let before = tree(&image.rootfs());

    let outside = dir.path().join("evil");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("escape", repack(&good, &[("../evil", tar::EntryType::Regular, b"x", None)]), "not a relative path"),
        ("symlink", repack(&good, &[("checkpoint/pages.img", tar::EntryType::Symlink, b"", Some("/etc/passwd"))]), "regular files only"),
        ("nested", repack(&good, &[("checkpoint/sub/x", tar::EntryType::Regular, b"x", None)]), "flat"),
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "archive"),
        ("diff-escape", {
            let evil_diff = forge(&[("../../evil", tar::EntryType::Regular, b"x", None)]);
            let mut v = forge(&[("checkpoint", tar::EntryType::Directory, b"", None)]);
            v.truncate(v.len() - 1024);
            let mut b = tar::Builder::new(Vec::new());
            let mut ar = tar::Archive::new(fs::File::open(&good).unwrap());
            for e in ar.entries().unwrap() {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                if path == "rootfs-diff.tar" {
                    data = evil_diff.clone();
                }
                let mut h = e.header().clone();
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_slice()).unwrap();
            }
            v.extend(b.into_inner().unwrap());
            v
        }, "rootfs-diff.tar"),
    ];
    for (name, data, want) in cases {
        let adir = dir.path().join(format!("a-{name}"));
        fs::create_dir_all(&adir).unwrap();
        let file = adir.join("ckpt.tar");
        fs::write(&file, data).unwrap();
        let rid = unique_id("k8s-bad");
        let _g = rt.adopt(&rid);
        let work = dir.path().join(format!("w-{name}"));
        let out = rt.exec(&argv(&[&"restore", &"-d", &"--import", &file, &"--work-path", &work, &"--bundle", &bundle, &rid]));
        eprintln!("{name}: {}", out.stderr.trim());
        assert_eq!(out.code, 1, "{name}: {out:?}");
        assert!(out.stderr.contains(want), "{name}: {:?}", out.stderr);
        let st = rt.exec(&["state", &rid]);
        assert!(st.stderr.contains("does not exist"), "{name}: {st:?}");
        assert_eq!(leftovers(&adir), Vec::<String>::new(), "{name}: nothing left next to the archive");
        assert!(!outside.exists() && !dir.path().join("evil").exists(), "{name}: wrote outside");
        assert_eq!(tree(&image.rootfs()), before, "{name}: the rootfs was touched");
        assert!(!work.join("restore.log").exists() || fs::read_dir(&work).unwrap().count() <= 1, "{name}");
    }
    // The good archive restores (onto the base copy, the image as it was).
    let b2 = write_bundle(&dir.path().join("ctr2"), serde_json::from_slice(entry(&list, "spec.dump")).unwrap(), &base);
    let rid = unique_id("k8s-ok");
    let _g = rt.adopt(&rid);
    let r = detached(&rt, &argv(&[&"restore", &"-d", &"--import", &good, &"--bundle", &b2, &rid]));
    assert_eq!(r.code, 0, "restore: {}", r.stderr);
    let p = wait_past(&base, 3);
    assert_eq!((p.pid, p.errors), (1, 0));
    rt.exec(&["delete", "--force", &rid]).ok();
    drop(r);
}
