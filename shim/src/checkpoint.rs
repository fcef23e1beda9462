//! The checkpoint request's options and the `stasis checkpoint` command
//! line they give, and the restore command line.
//!
//! containerd passes runc's `CheckpointOptions` (type
//! `containerd.runc.v1.CheckpointOptions`) as the request's options when a
//! client sets them: `ctr container checkpoint --task` always does (with
//! `file_locks`), Go clients may. ctr 1.6's `task checkpoint` sends
//! `--exit`, `--image-path` and `--work-path` only for runtime types named
//! `io.containerd.runc.*`, so for this shim that command always leaves the
//! task running and lets containerd store the image.

use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::oci::CheckpointOptions;

use crate::error::{Result, ShimError};

const OPTIONS_TYPE: &str = "containerd.runc.v1.CheckpointOptions";

/// Decodes the request's options; none means runc's defaults (leave the
/// task running, containerd's image path).
pub fn decode_options(options: Option<&Any>) -> Result<CheckpointOptions> {
    let Some(any) = options.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(CheckpointOptions::default());
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != OPTIONS_TYPE {
        return Err(ShimError::InvalidArgument(format!(
            "checkpoint options of type {:?}: only {OPTIONS_TYPE} is understood",
            any.type_url
        )));
    }
    CheckpointOptions::parse_from_bytes(&any.value)
        .map_err(|e| ShimError::InvalidArgument(format!("checkpoint options: {e}")))
}

/// Where one checkpoint goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub image: PathBuf,
    pub work: PathBuf,
    /// The work dir is the shim's own, removed afterwards (as runc's shim
    /// removes `<bundle>/work/criu-work`).
    pub own_work: bool,
    pub args: Vec<String>,
}

/// The image path is the options' `image_path`, else the path containerd
/// gave (its temporary dir, which it then stores as the checkpoint image);
/// the work path the options' `work_path`, else `<bundle>/work/checkpoint`.
pub fn plan(id: &str, bundle: &Path, request_path: &str, opts: &CheckpointOptions) -> Result<Plan> {
    let image = if !opts.image_path.is_empty() {
        PathBuf::from(&opts.image_path)
    } else if !request_path.is_empty() {
        PathBuf::from(request_path)
    } else {
        return Err(ShimError::InvalidArgument(
            "checkpoint: no image path".into(),
        ));
    };
    let (work, own_work) = if opts.work_path.is_empty() {
        (bundle.join("work").join("checkpoint"), true)
    } else {
        (PathBuf::from(&opts.work_path), false)
    };
    let mut args = vec![
        "checkpoint".to_string(),
        "--image-path".into(),
        image.display().to_string(),
        "--work-path".into(),
        work.display().to_string(),
    ];
    if opts.open_tcp {
        args.push("--tcp-established".into());
    }
    if opts.external_unix_sockets {
        args.push("--ext-unix-sk".into());
    }
    if opts.terminal {
        args.push("--shell-job".into());
    }
    if opts.file_locks {
        args.push("--file-locks".into());
    }
    if !opts.cgroups_mode.is_empty() {
        args.extend(["--manage-cgroups-mode".into(), opts.cgroups_mode.clone()]);
    }
    for ns in &opts.empty_namespaces {
        args.extend(["--empty-ns".into(), ns.clone()]);
    }
    if !opts.exit {
        args.push("--leave-running".into());
    }
    args.push(id.to_string());
    Ok(Plan {
        image,
        work,
        own_work,
        args,
    })
}

/// `stasis restore` of `id` from `image` into `bundle`, detached, with the
/// restored init's pid written to `pid_file`.
pub fn restore_args(
    id: &str,
    bundle: &Path,
    image: &Path,
    work: &Path,
    pid_file: &Path,
) -> Vec<String> {
    let s = |p: &Path| p.display().to_string();
    vec![
        "restore".into(),
        "--detach".into(),
        "--bundle".into(),
        s(bundle),
        "--image-path".into(),
        s(image),
        "--work-path".into(),
        s(work),
        "--pid-file".into(),
        s(pid_file),
        id.into(),
    ]
}

/// After a successful restore: removes the directory containerd unpacked
/// the checkpoint into, which containerd 1.6 never removes (it makes one,
/// `$XDG_RUNTIME_DIR/ctrd-checkpoint*` or `/tmp/ctrd-checkpoint*`, for
/// each task created from a checkpoint and hands it to the shim alone).
/// Other directories are left alone.
pub fn discard_unpacked(image: &Path) -> bool {
    let ours = image
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("ctrd-checkpoint"));
    if ours {
        if let Err(e) = std::fs::remove_dir_all(image) {
            log::warn!("remove {}: {e}", image.display());
            return false;
        }
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(opts: &CheckpointOptions) -> Any {
        Any {
            type_url: OPTIONS_TYPE.into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn no_options_leave_the_task_running_in_containerds_dir() {
        let opts = decode_options(None).unwrap();
        let p = plan("c1", Path::new("/b"), "/tmp/ctd-checkpoint1", &opts).unwrap();
        assert_eq!(p.image, Path::new("/tmp/ctd-checkpoint1"));
        assert_eq!(p.work, Path::new("/b/work/checkpoint"));
        assert!(p.own_work);
        assert_eq!(
            p.args,
            [
                "checkpoint",
                "--image-path",
                "/tmp/ctd-checkpoint1",
                "--work-path",
                "/b/work/checkpoint",
                "--leave-running",
                "c1"
            ]
        );
    }

    #[test]
    fn exit_image_and_work_paths_come_from_the_options() {
        let sent = CheckpointOptions {
            exit: true,
            file_locks: true,
            image_path: "/ck/img".into(),
            work_path: "/ck/work".into(),
            ..Default::default()
        };
        // containerd's typeurl names the type bare, protobuf's Any with a host.
        for mut a in [any(&sent), any(&sent)] {
            if a.type_url == OPTIONS_TYPE {
                a.type_url = format!("type.googleapis.com/{OPTIONS_TYPE}");
            }
            let opts = decode_options(Some(&a)).unwrap();
            let p = plan("c1", Path::new("/b"), "/tmp/ctd-x", &opts).unwrap();
            assert!(!p.own_work);
            assert_eq!(
                p.args,
                [
                    "checkpoint",
                    "--image-path",
                    "/ck/img",
                    "--work-path",
                    "/ck/work",
                    "--file-locks",
                    "c1"
                ]
            );
        }
    }

    #[test]
    fn foreign_options_are_refused() {
        let a = Any {
            type_url: "example.Other".into(),
            value: vec![1],
            ..Default::default()
        };
        assert!(matches!(
            decode_options(Some(&a)),
            Err(ShimError::InvalidArgument(_))
        ));
    }

    #[test]
    fn only_containerds_unpacked_checkpoints_are_discarded() {
        let base = std::env::temp_dir().join(format!("shim-discard-{}", std::process::id()));
        let (theirs, mine) = (base.join("ctrd-checkpoint123"), base.join("my-checkpoint"));
        for d in [&theirs, &mine] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("inventory.img"), b"x").unwrap();
        }
        assert!(discard_unpacked(&theirs) && !theirs.exists());
        assert!(!discard_unpacked(&mine) && mine.join("inventory.img").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn restore_is_detached_with_a_pid_file() {
        let a = restore_args(
            "c2",
            Path::new("/b"),
            Path::new("/ck"),
            Path::new("/b/work/restore"),
            Path::new("/b/init.pid"),
        );
        assert_eq!(
            a,
            [
                "restore",
                "--detach",
                "--bundle",
                "/b",
                "--image-path",
                "/ck",
                "--work-path",
                "/b/work/restore",
                "--pid-file",
                "/b/init.pid",
                "c2"
            ]
        );
    }
}
