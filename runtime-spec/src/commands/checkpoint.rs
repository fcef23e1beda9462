//! `stasis checkpoint [opts] ID`: dump a running (or paused) container with
//! the engine, then, unless `--leave-running`, delete it from the runtime.
//!
//! Files written, as runc (with CRIU) writes them:
//! * image dir (`--image-path`, default `$CWD/checkpoint`): `descriptors.json`
//!   (before the dump), the engine's images (`inventory.img` last);
//! * work dir (`--work-path`, default the image dir): `dump.log` and
//!   `stats-dump` (CRIU's stats format), also after a failed dump.
//!
//! `--export FILE` (stasis' own) also writes the kubelet/CRI-O archive
//! (`cr_archive`): the image and work dirs then default to a private
//! directory next to FILE, and the rootfs diff is taken while the container
//! is frozen.

use std::fmt::Write as _;
use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use stasis_checkpoint::freezer::Freezer;
use stasis_checkpoint::{dump, image, DumpOptions, DumpStats, FrozenHook};

use crate::cli::{CheckpointOpts, GlobalOpts};
use crate::container::Runtime;
use crate::cr_archive::Export;
use crate::image_dir;
use crate::logging::Logger;
use crate::oplock;
use crate::stats;

pub const LOG_FILE: &str = "dump.log";

pub fn run(global: &GlobalOpts, opts: &CheckpointOpts) -> anyhow::Result<i32> {
    // Nothing is looked at or touched before the flags are known to be honoured.
    refuse_unsupported(opts)?;
    let logger = Logger::new(global);
    let rt = Runtime::new(global, &logger);
    let id = &opts.id;
    // One checkpoint (or restore) of a container at a time: a second one is
    // refused here, before anything is looked at.
    let _lock = oplock::acquire(global, id, "checkpoint")?;
    let state = rt
        .state(id)?
        .ok_or_else(|| anyhow!("container does not exist"))?;
    match state.status.as_str() {
        "running" | "paused" => {}
        other => bail!("Container cannot be checkpointed in {other} state"),
    }
    if state.pid <= 0 {
        bail!("container {id} has no init process");
    }
    let cwd = std::env::current_dir().context("get the current directory")?;
    let export = match &opts.export {
        Some(file) => Some(Export::prepare(
            &cwd.join(file),
            &state.bundle,
            opts.rootfs_base.as_ref().map(|b| cwd.join(b)).as_deref(),
        )?),
        None => None,
    };
    let image_dir = match (&opts.image_path, &export) {
        (Some(p), _) => cwd.join(p),
        (None, Some(e)) => e.staging.join(crate::cr_archive::CHECKPOINT_DIR),
        (None, None) => cwd.join("checkpoint"),
    };
    let work_dir = match (&opts.work_path, &export) {
        (Some(w), _) => cwd.join(w),
        (None, Some(e)) if opts.image_path.is_none() => e.staging.clone(),
        _ => image_dir.clone(),
    };
    // As runc: the parent must exist, relative to the image directory
    // (resolved by name: the image directory may not exist yet).
    if let Some(p) = &opts.parent_path {
        if !lexical(&image_dir.join(p)).is_dir() {
            bail!("invalid --parent-path");
        }
    }
    // An earlier image there is replaced only once the new one is complete.
    let target = image_dir::Target::prepare(&image_dir)?;
    make_work_dir(&work_dir)?;
    let result = dump_into(&target, &state, opts, export.as_ref(), &logger);
    let log_path = work_dir.join(LOG_FILE);
    let stops = !opts.leave_running && !opts.pre_dump;
    let result = match result {
        Ok(done) => match target.commit() {
            Ok(()) => Ok(done),
            Err(e) => {
                // The image is complete but not in place; without
                // --leave-running the tree is gone already.
                let msg = format!("checkpoint of container {id} failed: {e:#}");
                write_logs(&work_dir, &format!("{msg}\n"), None);
                if stops {
                    let _ = rt.delete_force(id);
                }
                if let Some(ex) = export {
                    ex.discard();
                }
                bail!("{msg} (log file: {})", log_path.display())
            }
        },
        Err(e) => {
            target.abandon();
            Err(e)
        }
    };
    match result {
        Ok((st, wall_us)) => {
            let log = success_log(id, state.pid, &image_dir, &st, wall_us, opts.leave_running);
            write_logs(&work_dir, &log, Some(&st));
            // The archive before the runtime's delete; if it fails, the
            // image stays where it is and the error says so.
            let exported = export.map(|e| e.finish(id, &state.created, &image_dir, &work_dir));
            if stops {
                // The engine killed the tree; now the runtime's record goes,
                // so `state` says "container does not exist" as after runc.
                rt.delete_force(id)
                    .context("checkpoint written, but removing the container failed")?;
            }
            exported.transpose()?;
            Ok(0)
        }
        Err(e) => {
            let msg = format!("checkpoint of container {id} failed: {e}");
            let log = format!(
                "{msg}\nthe container was left as it was ({}).\n",
                state.status
            );
            write_logs(&work_dir, &log, None);
            if let Some(ex) = export {
                // Its private directory (maybe the work dir too) goes.
                let private = work_dir.starts_with(&ex.staging);
                ex.discard();
                if private {
                    bail!("{msg}");
                }
            }
            bail!("{msg} (log file: {})", log_path.display())
        }
    }
}

/// Dumps the container into `target`'s directory; returns the engine's
/// figures and the wall time in microseconds.
fn dump_into(
    target: &image_dir::Target,
    state: &crate::container::State,
    opts: &CheckpointOpts,
    export: Option<&Export>,
    logger: &Logger,
) -> anyhow::Result<(DumpStats, u64)> {
    let image_dir = target.dir();
    let pid = state.pid;
    // runc writes no descriptors.json for a pre-dump (memory only).
    if !opts.pre_dump {
        // The messages carry their causes: printed with `{}`, not as a chain.
        image::write_descriptors_json(image_dir, &descriptors(pid))
            .map_err(|e| anyhow!("write descriptors.json in {}: {e}", image_dir.display()))?;
    }
    let dopts = DumpOptions {
        image_dir: image_dir.to_path_buf(),
        leave_running: opts.leave_running,
        own_ipc_ns: own_ipc_ns(pid),
        copy_threads: 2,
        freezer: Freezer::of_pid(pid).map_err(|e| anyhow!("find the freezer cgroup of {pid}: {e}"))?,
        // Copying while it runs only helps a container that does run.
        pre_copy: opts.leave_running && state.status == "running",
        pre_dump: opts.pre_dump,
        parent: opts.parent_path.as_ref().map(|p| p.to_string_lossy().into_owned()),
        frozen_hook: if opts.pre_dump { None } else { Some(frozen_hook(pid, image_dir, export)) },
    };
    logger.debug(&format!(
        "dumping container {} (init {pid}) into {}",
        opts.id,
        image_dir.display()
    ));
    let t0 = Instant::now();
    let st = dump(pid, &dopts).map_err(|e| anyhow!("{e}"))?;
    Ok((st, t0.elapsed().as_micros() as u64))
}

/// While the container is frozen: its tmpfs contents into the image, and,
/// for `--export`, its rootfs diff.
fn frozen_hook(pid: i32, image_dir: &Path, export: Option<&Export>) -> FrozenHook {
    let tmpfs = crate::tmpfs::saver(pid, image_dir);
    let diff = export.map(Export::frozen_work);
    FrozenHook(std::sync::Arc::new(move || {
        (tmpfs.0)()?;
        diff.as_ref().map_or(Ok(()), |d| d())
    }))
}

/// `path` with `.` and `..` components resolved by name.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Flags whose work the engine does not do: refused, container untouched.
fn refuse_unsupported(o: &CheckpointOpts) -> anyhow::Result<()> {
    let never = |flag: &str| bail!("checkpoint: {flag} is not supported by stasis");
    if let Some(p) = &o.parent_path {
        // runc's checks: relative to the image path, and a directory.
        if Path::new(p).is_absolute() {
            bail!("--parent-path must be relative");
        }
    }
    if o.lazy_pages {
        return never("--lazy-pages");
    }
    if o.page_server.is_some() {
        return never("--page-server");
    }
    if o.status_fd.is_some() {
        return never("--status-fd");
    }
    if o.auto_dedup {
        return never("--auto-dedup");
    }
    if o.export.is_some() && (o.pre_dump || o.parent_path.is_some()) {
        bail!("checkpoint: --export writes a whole, standalone checkpoint: it cannot be used with --pre-dump or --parent-path");
    }
    if o.rootfs_base.is_some() && o.export.is_none() {
        bail!("checkpoint: --rootfs-base is only used with --export");
    }
    // The parser accepts only "network" (runc: "namespace %q is not
    // supported"), which stasis honours anyway: it never saves netdevs.
    if let Some(ns) = o.empty_ns.iter().find(|ns| *ns != "network") {
        bail!("namespace {ns:?} is not supported");
    }
    Ok(())
}

/// The work dir, 0700 when created (an existing one, e.g. podman's
/// userdata, keeps its mode).
fn make_work_dir(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create work directory {}", dir.display()))
}

/// What init's fds 0, 1, 2 point at, as runc records them.
fn descriptors(pid: i32) -> [String; 3] {
    [0, 1, 2].map(|fd| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/dev/null".into())
    })
}

/// Whether the container has an IPC namespace of its own (then every SysV
/// object in it is part of the checkpoint).
fn own_ipc_ns(pid: i32) -> bool {
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino());
    match (
        ino(&format!("/proc/{pid}/ns/ipc")),
        ino("/proc/self/ns/ipc"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs != ours,
        _ => false,
    }
}

fn success_log(
    id: &str,
    pid: i32,
    image: &Path,
    st: &DumpStats,
    wall_us: u64,
    leave_running: bool,
) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "stasis {}: checkpoint of container {id} (init pid {pid})",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(s, "image: {}", image.display());
    let _ = writeln!(
        s,
        "dumped {} processes, {} threads, {} bytes of memory ({} pages scanned)",
        st.tasks, st.threads, st.pages_bytes, st.pages_scanned
    );
    let _ = writeln!(
        s,
        "frozen {:.1} ms (collect {:.1} ms, copy {:.1} ms); total {:.1} ms",
        ms(st.frozen_us),
        ms(st.memdump_us),
        ms(st.memwrite_us),
        ms(wall_us)
    );
    if let Some(p) = &st.precopy {
        let _ = writeln!(
            s,
            "copied {} bytes while the container ran: frozen {:.1} ms to start tracking writes, \
             tracking by {:.1} ms, copied by {:.1} ms",
            p.bytes,
            ms(p.frozen_us),
            ms(p.tracked_us),
            ms(p.copied_us)
        );
    }
    if !st.phases.is_empty() {
        let list: Vec<String> = st.phases.iter().map(|(name, us)| format!("{name} {:.1}", ms(*us))).collect();
        let _ = writeln!(s, "engine phases end at (ms): {}", list.join(", "));
    }
    if st.reaped > 0 {
        let _ = writeln!(s, "freed the memory of {} large process(es) alongside their exit", st.reaped);
    }
    let after = if leave_running {
        "left running"
    } else {
        "stopped and deleted"
    };
    let _ = writeln!(s, "container {after}");
    s
}

/// `dump.log` always, `stats-dump` after a successful dump. Failing to write
/// them does not change the outcome of the checkpoint.
fn write_logs(work: &Path, log: &str, st: Option<&DumpStats>) {
    let _ = std::fs::write(work.join(LOG_FILE), log);
    if let Some(st) = st {
        let s = stats::DumpStats {
            frozen_time: stats::us32(st.frozen_us),
            memdump_time: stats::us32(st.memdump_us),
            memwrite_time: stats::us32(st.memwrite_us),
            pages_scanned: st.pages_scanned,
            pages_written: st.pages_bytes / 4096,
            ..Default::default()
        };
        let _ = stats::write_dump(work, &s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CheckpointOpts {
        CheckpointOpts {
            id: "c".into(),
            ..Default::default()
        }
    }

    #[test]
    fn unsupported_flags_are_refused() {
        let refused = |o: CheckpointOpts| refuse_unsupported(&o).unwrap_err().to_string();
        // Incremental dumps are supported; a parent path must be relative.
        assert!(refuse_unsupported(&CheckpointOpts { pre_dump: true, ..opts() }).is_ok());
        assert!(refuse_unsupported(&CheckpointOpts { parent_path: Some("../p".into()), ..opts() }).is_ok());
        assert!(refused(CheckpointOpts {
            parent_path: Some("/abs".into()),
            ..opts()
        })
        .contains("--parent-path must be relative"));
        assert!(refused(CheckpointOpts {
            lazy_pages: true,
            ..opts()
        })
        .contains("--lazy-pages"));
        assert!(refused(CheckpointOpts {
            page_server: Some("h:1".into()),
            ..opts()
        })
        .contains("--page-server"));
        assert!(refused(CheckpointOpts {
            status_fd: Some(3),
            ..opts()
        })
        .contains("--status-fd"));
        assert!(refused(CheckpointOpts {
            auto_dedup: true,
            ..opts()
        })
        .contains("--auto-dedup"));
        assert!(refused(CheckpointOpts {
            empty_ns: vec!["pid".into()],
            ..opts()
        })
        .contains("\"pid\""));
    }

    #[test]
    fn harmless_flags_are_accepted() {
        let o = CheckpointOpts {
            tcp_established: true,
            ext_unix_sk: true,
            shell_job: true,
            file_locks: true,
            tcp_skip_in_flight: true,
            link_remap: true,
            leave_running: true,
            manage_cgroups_mode: Some(crate::cli::ManageCgroupsMode::Ignore),
            empty_ns: vec!["network".into()],
            ..opts()
        };
        refuse_unsupported(&o).unwrap();
    }
}
