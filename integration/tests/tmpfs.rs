//! What lives only in the container's own memory-backed mounts comes back:
//! a file the workload left in `/dev/shm` (a tmpfs of the container's mount
//! namespace) is in the restored container, with its contents and mode, and
//! the rootfs' `/dev` device nodes are left to the runtime.

#[allow(dead_code)] // this test uses a few of the shared helpers
mod cr;

use cr::*;
use stasis_integration::{unique_id, Runtime, TempDir};

#[test]
fn dev_shm_contents_survive_checkpoint_and_restore() {
    let (rt, bundle, dir) = (Runtime::stasis(), counter_bundle(), TempDir::new("stasis-tmpfs"));
    // Before the counter starts, leave a file in /dev/shm (mode 0640).
    bundle.edit_config(|c| {
        c["process"]["args"] = serde_json::json!([
            "/bin/sh", "-c",
            "printf 'kept in shm\\n' > /dev/shm/note && chmod 640 /dev/shm/note && mkdir /dev/shm/d && echo x > /dev/shm/d/y && exec /bin/counter"
        ]);
    });
    let id = unique_id("cr-shm");
    let _guard = rt.adopt(&id);
    let run = run_counter(&rt, &bundle, &id);
    let image = dir.path().join("img");
    rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &id])).ok();
    assert!(image.join("tmpfs.json").is_file(), "the tmpfs index is in the image");
    let at = progress(&bundle).expect("state");
    assert_gone(&rt, &id, &bundle);
    drop(run);

    // A fresh container from the same bundle has an empty /dev/shm of its own;
    // after restore the file is back and the counter goes on.
    let restored = restore(&rt, &image, &bundle, &id, &[]);
    assert_eq!(restored.code, 0, "restore: {}", restored.stderr);
    let later = wait_beyond(&bundle, at.iter + 2);
    assert_eq!((later.pid, later.errors), (1, 0));
    let cat = rt.exec(&["exec", &id, "cat", "/dev/shm/note", "/dev/shm/d/y"]).ok();
    assert_eq!(cat.stdout, "kept in shm\nx\n");
    let ls = rt.exec(&["exec", &id, "stat", "-c", "%a", "/dev/shm/note"]).ok();
    assert_eq!(ls.stdout.trim(), "640");
    // /dev itself (device nodes) is the runtime's, not restored from the image.
    let null = rt.exec(&["exec", &id, "sh", "-c", "echo ok > /dev/null && echo fine"]).ok();
    assert_eq!(null.stdout.trim(), "fine");
    rt.exec(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", WAIT);
    rt.exec(&["delete", &id]).ok();
    assert_gone(&rt, &id, &bundle);
    drop(restored);
}
