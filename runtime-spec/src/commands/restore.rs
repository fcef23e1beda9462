//! `stasis restore [opts] ID`: a container from a checkpoint, as `runc
//! restore` makes one.
//!
//! The underlying runtime creates the container from a rewritten copy of
//! the bundle's config (`restore_bundle`): its process is stasis itself,
//! exec'd from a preserved fd as the container's pid 1 (the hidden verb
//! `restore-stub`), which rebuilds the dumped tree inside the container.
//! The engine, here on the host, then turns those stub processes into the
//! dumped ones (`restore_attached`). The fds the stub gets:
//!
//! | fd | what |
//! |----|------|
//! | 0–2 | our own stdio (a detached container inherits the caller's, as with runc) |
//! | 3 | the stasis binary (`/proc/self/exe`), exec'd as `/proc/self/fd/3` |
//! | 4 | the image directory (`O_PATH`) |
//! | 5 | write end of the ready pipe (stub → engine) |
//! | 6 | read end of the hold pipe (engine → stub) |
//!
//! Any failure deletes the container from the runtime and removes stasis'
//! private directory: nothing is left behind.
//!
//! `--import FILE` (stasis' own) restores from a kubelet/CRI-O archive
//! (`cr_archive`): unpacked and checked first, its rootfs diff applied to
//! the bundle's rootfs, then restored as above.

use std::fmt::Write as _;
use std::fs::{DirBuilder, File};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use stasis_checkpoint::restore::{restore_attached, RestoreOptions, Restored};

use crate::cli::{GlobalOpts, RestoreOpts};
use crate::container::{self, Runtime};
use crate::cr_archive;
use crate::logging::Logger;
use crate::oplock;
use crate::restore_bundle::{self, PrivateDir, PRESERVED_FDS};
use crate::{stats, waiter};

pub const LOG_FILE: &str = "restore.log";

/// Absolute paths the restore works with.
struct Paths {
    bundle: PathBuf,
    image: PathBuf,
    work: PathBuf,
}

pub fn run(global: &GlobalOpts, opts: &RestoreOpts) -> anyhow::Result<i32> {
    if opts.lazy_pages {
        bail!("restore: --lazy-pages is not supported by stasis");
    }
    let logger = Logger::new(global);
    let rt = Runtime::new(global, &logger);
    // Another restore (or a checkpoint) of this id is refused before
    // anything is looked at.
    let lock = oplock::acquire(global, &opts.id, "restore")?;
    let cwd = std::env::current_dir().context("get the current directory")?;
    if rt.state(&opts.id)?.is_some() {
        bail!("container with given ID already exists");
    }
    // --import FILE: the kubelet/CRI-O archive is unpacked (and checked
    // whole) first; dropped on any error below, it removes what it made.
    let mut imported = match &opts.import {
        Some(file) => Some(cr_archive::import(
            &cwd.join(file),
            opts.image_path.as_ref().map(|p| cwd.join(p)).as_deref(),
        )?),
        None => None,
    };
    let image = match &imported {
        Some(imp) => imp.image.clone(),
        None => cwd.join(
            opts.image_path
                .clone()
                .unwrap_or_else(|| PathBuf::from("checkpoint")),
        ),
    };
    let paths = Paths {
        bundle: opts
            .bundle
            .as_ref()
            .map_or_else(|| cwd.clone(), |b| cwd.join(b)),
        work: opts
            .work_path
            .as_ref()
            .map_or_else(|| image.clone(), |w| cwd.join(w)),
        image,
    };
    if !paths.image.join("inventory.img").is_file() {
        bail!(
            "no complete checkpoint in {}: inventory.img is missing",
            paths.image.display()
        );
    }
    let mut config = read_config(&paths.bundle)?;
    if let Some(imp) = &imported {
        // Files the container wrote go into the new (fresh) rootfs first.
        let root = config["root"]["path"].as_str().context("config.json has no root.path")?;
        imp.apply_rootfs(&paths.bundle.join(root))?;
    }
    let original = config.clone();
    restore_bundle::rewrite_config(&mut config, &paths.bundle, restore_bundle::own_caps()?)?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.work)
        .with_context(|| format!("create work directory {}", paths.work.display()))?;
    // runc creates its root on create; made here first so that the private
    // dir's key (its canonical path) is the same now and at delete time.
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(global.state_root())
        .with_context(|| format!("create state root {}", global.state_root().display()))?;
    let private = PrivateDir::create(restore_bundle::private_dir(global, &opts.id))?;

    let t0 = Instant::now();
    match restore(&rt, opts, &paths, &private, (&config, &original)) {
        Ok((restored, create_us)) => {
            let log = success_log(
                &opts.id,
                &paths,
                &restored,
                create_us,
                t0.elapsed().as_micros() as u64,
            );
            let _ = std::fs::write(paths.work.join(LOG_FILE), log);
            let _ = stats::write_restore(
                &paths.work,
                &stats::RestoreStats {
                    forking_time: stats::us32(create_us),
                    restore_time: stats::us32(restored.restore_us),
                    pages_restored: restored.pages_restored,
                    ..Default::default()
                },
            );
            if let Some(imp) = imported.take() {
                imp.done();
            }
            // The container exists now: a checkpoint of it may start.
            drop(lock);
            if opts.detach {
                return Ok(0);
            }
            // Foreground, like `runc run`: the container's exit status is
            // ours, and the container goes with its init.
            let code = waiter::wait_forwarding_signals(restored.init_pid);
            let _ = rt.delete_force(&opts.id);
            let _ = restore_bundle::remove(&private.path);
            Ok(code)
        }
        Err(e) => {
            if let Err(d) = rt.delete_force(&opts.id) {
                logger.debug(&format!("cleanup after a failed restore: {d:#}"));
            }
            let _ = restore_bundle::remove(&private.path);
            let msg = format!("restore of container {} failed: {e:#}", opts.id);
            let _ = std::fs::write(
                paths.work.join(LOG_FILE),
                format!("{msg}\nnothing was left behind.\n"),
            );
            Err(anyhow!("{msg}"))
        }
    }
}

fn read_config(bundle: &Path) -> anyhow::Result<serde_json::Value> {
    let file = bundle.join("config.json");
    let text = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parse {}", file.display()))
}

/// Create and start the container around the stub, restore into it, write
/// `--pid-file`. Returns what the engine restored and the time create+start
/// took (µs).
fn restore(
    rt: &Runtime,
    opts: &RestoreOpts,
    paths: &Paths,
    private: &PrivateDir,
    (config, original): (&serde_json::Value, &serde_json::Value),
) -> anyhow::Result<(Restored, u64)> {
    private.write_original(original)?;
    let bundle = private.write_config(config)?;
    let exe = File::open("/proc/self/exe").context("open the stasis binary")?;
    let image = nix::fcntl::open(
        &paths.image,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open image directory {}", paths.image.display()))?;
    // SAFETY: `open` just returned this fd, which nothing else owns.
    let image = unsafe { OwnedFd::from_raw_fd(image) };
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("create the ready pipe")?;
    let (hold_r, hold_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("create the hold pipe")?;
    // Our ends must not sit where the stub's are about to go.
    let (ready_r, hold_w) = (above_stub_fds(&ready_r)?, above_stub_fds(&hold_w)?);
    let stub_fds = place_at_3(vec![exe.into(), image, ready_w, hold_r])?;

    if !(opts.detach && opts.no_subreaper) {
        // The container's init is our child once the runtime's create has
        // exited: we can wait for it, and when we exit it goes up to our
        // own subreaper (containerd-shim, conmon), as a runc restore's does.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on us.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("become a child subreaper");
        }
    }
    let t0 = Instant::now();
    let mut args: Vec<std::ffi::OsString> = vec![
        "--bundle".into(),
        bundle.into(),
        "--preserve-fds".into(),
        PRESERVED_FDS.to_string().into(),
    ];
    if let Some(s) = &opts.console_socket {
        args.extend(["--console-socket".into(), s.into()]);
    }
    if let Some(s) = &opts.pidfd_socket {
        args.extend(["--pidfd-socket".into(), s.into()]);
    }
    if opts.no_pivot {
        args.push("--no-pivot".into());
    }
    if opts.no_new_keyring {
        args.push("--no-new-keyring".into());
    }
    args.extend([
        "--pid-file".into(),
        private.pid_file().into(),
        opts.id.clone().into(),
    ]);
    let mut create = rt.command("create", &args, true);
    // SAFETY: between fork and exec only fcntl, which is async-signal-safe,
    // on fds 3..=6 that this process holds.
    unsafe {
        create.pre_exec(|| {
            for fd in 3..3 + PRESERVED_FDS as RawFd {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let status = create.status().context("cannot run the runtime's create")?;
    // The runtime's init holds the stub's ends now; ours must go, so that a
    // dead stub reads as end-of-file on the ready pipe.
    drop(stub_fds);
    container::check(status, "create")?;
    let pid_text =
        std::fs::read_to_string(private.pid_file()).context("read the container's pid file")?;
    let init: i32 = pid_text
        .trim()
        .parse()
        .with_context(|| format!("bad pid file content {pid_text:?}"))?;
    // The new container's tmpfs mounts exist now; fill them before its
    // processes come back.
    crate::tmpfs::restore(init, &paths.image)?;
    rt.run("start", &[&opts.id])?;
    let create_us = t0.elapsed().as_micros() as u64;
    let ropts = RestoreOptions {
        image_dir: paths.image.clone(),
        ..Default::default()
    };
    let restored = restore_attached(&ropts, init, ready_r, hold_w)
        .with_context(|| format!("restore from {}", paths.image.display()))?;
    if let Some(pid_file) = &opts.pid_file {
        write_pid_file(pid_file, restored.root_pid)?;
    }
    Ok((restored, create_us))
}

/// A close-on-exec copy of `fd` numbered above the stub's fds (3..=6).
fn above_stub_fds(fd: &OwnedFd) -> anyhow::Result<OwnedFd> {
    let raw = fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_DUPFD_CLOEXEC(3 + PRESERVED_FDS as RawFd),
    )
    .context("duplicate an fd")?;
    // SAFETY: fcntl just returned this new fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Puts `fds` at 3, 4, … (close-on-exec; the runtime's child clears that),
/// so that the spawn machinery's own pipes land above them. Whatever was at
/// those numbers is closed: every fd we keep must be above them.
fn place_at_3(fds: Vec<OwnedFd>) -> anyhow::Result<Vec<OwnedFd>> {
    // First out of the way, so no source is one of the targets.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(above_stub_fds)
        .collect::<anyhow::Result<_>>()?;
    drop(fds);
    high.iter()
        .zip(3..)
        .map(|(fd, at)| {
            // SAFETY: dup3 onto a number we then own; the fd there before, if
            // any, was not ours to keep (the stub's slots are reserved).
            let r = unsafe { libc::dup3(fd.as_raw_fd(), at, libc::O_CLOEXEC) };
            if r < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("place fd {at}"));
            }
            // SAFETY: dup3 made `at` a fresh copy that only this OwnedFd owns.
            Ok(unsafe { OwnedFd::from_raw_fd(at) })
        })
        .collect()
}

/// runc's way: a dot-file next to it, then rename, so readers never see a
/// partial pid.
fn write_pid_file(path: &Path, pid: i32) -> anyhow::Result<()> {
    let path = std::env::current_dir()
        .map(|c| c.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let name = path.file_name().context("--pid-file has no file name")?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, pid.to_string()).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

fn success_log(id: &str, paths: &Paths, r: &Restored, create_us: u64, wall_us: u64) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "stasis {}: restore of container {id}",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(s, "image: {}", paths.image.display());
    let _ = writeln!(s, "bundle: {}", paths.bundle.display());
    let _ = writeln!(
        s,
        "init pid {} (host), {} pages restored ({} by userfaultfd copy)",
        r.root_pid, r.pages_restored, r.uffd_pages
    );
    let _ = writeln!(
        s,
        "runtime create+start {:.1} ms, engine {:.1} ms, total {:.1} ms",
        ms(create_us),
        ms(r.restore_us),
        ms(wall_us)
    );
    let stages: Vec<String> = r
        .phases
        .iter()
        .map(|(name, us)| format!("{name} {:.1}", ms(*us)))
        .collect();
    let _ = writeln!(s, "engine stages end at (ms): {}", stages.join(", "));
    s
}
