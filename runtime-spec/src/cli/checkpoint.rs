//! Options of `checkpoint` and `restore`: every flag of runc's two verbs,
//! plus the extras that engines send on restore although runc lacks them.
// The fields are read by the checkpoint engine's commands, not by the CLI.
#![allow(dead_code)]

use std::path::PathBuf;

use super::flags::{FlagSpec, Parsed};
use super::{one_id, UsageError, VerbSpec};

/// `--manage-cgroups-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManageCgroupsMode {
    Soft,
    Full,
    Strict,
    Ignore,
}

impl ManageCgroupsMode {
    fn parse(s: &str) -> Result<Self, UsageError> {
        match s {
            "soft" => Ok(Self::Soft),
            "full" => Ok(Self::Full),
            "strict" => Ok(Self::Strict),
            "ignore" => Ok(Self::Ignore),
            other => Err(UsageError::invalid(format!(
                "invalid manage cgroups mode: {other:?}"
            ))),
        }
    }
}

/// `runc checkpoint [opts] <id>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointOpts {
    pub id: String,
    /// `None`: runc's default, `$CWD/checkpoint`.
    pub image_path: Option<PathBuf>,
    /// `None`: the image directory.
    pub work_path: Option<PathBuf>,
    /// Relative to the image path (pre-dump chain).
    pub parent_path: Option<PathBuf>,
    pub leave_running: bool,
    pub tcp_established: bool,
    pub tcp_skip_in_flight: bool,
    pub link_remap: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub lazy_pages: bool,
    /// `--status-fd`; runc's default -1 is `None`.
    pub status_fd: Option<i32>,
    /// `ADDRESS:PORT`, unparsed.
    pub page_server: Option<String>,
    pub file_locks: bool,
    pub pre_dump: bool,
    pub manage_cgroups_mode: Option<ManageCgroupsMode>,
    /// Only `network` is accepted, as in runc.
    pub empty_ns: Vec<String>,
    pub auto_dedup: bool,
    /// stasis: also write the kubelet/CRI-O checkpoint archive here.
    pub export: Option<PathBuf>,
    /// stasis: the unmodified image rootfs the archive's rootfs diff is
    /// computed against (when the rootfs is not an overlay mount).
    pub rootfs_base: Option<PathBuf>,
}

/// `runc restore [opts] <id>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOpts {
    pub id: String,
    /// `--bundle`/`-b`; `None`: the current directory.
    pub bundle: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// `None`: runc's default, `$CWD/checkpoint`.
    pub image_path: Option<PathBuf>,
    pub work_path: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub no_subreaper: bool,
    pub no_pivot: bool,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub manage_cgroups_mode: Option<ManageCgroupsMode>,
    pub empty_ns: Vec<String>,
    pub auto_dedup: bool,
    pub lazy_pages: bool,
    /// `TYPE:LABEL`.
    pub lsm_profile: Option<String>,
    pub lsm_mount_context: Option<String>,
    // Extras runc's callers send although runc's restore lacks them.
    /// go-runc reuses its checkpoint args on restore.
    pub parent_path: Option<PathBuf>,
    /// crun's flag; podman sends it.
    pub tcp_close: bool,
    /// conmon adds it when configured.
    pub no_new_keyring: bool,
    /// create/run flags that some callers also pass to restore.
    pub preserve_fds: u32,
    pub pidfd_socket: Option<PathBuf>,
    /// stasis: restore from a kubelet/CRI-O checkpoint archive.
    pub import: Option<PathBuf>,
}

const HELP: FlagSpec = FlagSpec::boolean("help", "show help").alias(&["h"]);

static CHECKPOINT_FLAGS: &[FlagSpec] = &[
    FlagSpec::value(
        "image-path",
        "path for saving the image files (default: $CWD/checkpoint)",
    ),
    FlagSpec::value("work-path", "path for saving work files and logs"),
    FlagSpec::value(
        "parent-path",
        "path for previous dump files, relative to --image-path",
    ),
    FlagSpec::boolean(
        "leave-running",
        "leave the process running after checkpointing",
    ),
    FlagSpec::boolean("tcp-established", "allow open tcp connections"),
    FlagSpec::boolean("tcp-skip-in-flight", "skip in-flight tcp connections"),
    FlagSpec::boolean(
        "link-remap",
        "allow one to link unlinked files back when possible",
    ),
    FlagSpec::boolean("ext-unix-sk", "allow external unix sockets"),
    FlagSpec::boolean("shell-job", "allow shell jobs"),
    FlagSpec::boolean(
        "lazy-pages",
        "use userfaultfd to lazily restore memory pages",
    ),
    FlagSpec::int(
        "status-fd",
        "notify on this fd when the lazy page server is ready",
    ),
    FlagSpec::value("page-server", "ADDRESS:PORT of the page server"),
    FlagSpec::boolean("file-locks", "handle file locks, for safety"),
    FlagSpec::boolean(
        "pre-dump",
        "dump the container's memory only, leave it running",
    ),
    FlagSpec::value(
        "manage-cgroups-mode",
        "cgroups mode: soft (default), full, strict or ignore",
    ),
    FlagSpec::repeated(
        "empty-ns",
        "create a namespace, but don't restore its properties",
    ),
    FlagSpec::boolean("auto-dedup", "enable auto deduplication of memory images"),
    FlagSpec::value(
        "export",
        "stasis: also write a kubelet/CRI-O checkpoint archive (tar) to this new file",
    ),
    FlagSpec::value(
        "rootfs-base",
        "stasis: with --export, the unmodified image rootfs to diff against (default: the overlay's upper dir)",
    ),
    HELP,
];

static RESTORE_FLAGS: &[FlagSpec] = &[
    FlagSpec::value(
        "console-socket",
        "AF_UNIX socket that receives the console's pty master",
    ),
    FlagSpec::value("image-path", "path to the image files for restoring"),
    FlagSpec::value("work-path", "path for saving work files and logs"),
    FlagSpec::boolean("tcp-established", "allow open tcp connections"),
    FlagSpec::boolean("ext-unix-sk", "allow external unix sockets"),
    FlagSpec::boolean("shell-job", "allow shell jobs"),
    FlagSpec::boolean("file-locks", "handle file locks, for safety"),
    FlagSpec::value(
        "manage-cgroups-mode",
        "cgroups mode: soft (default), full, strict or ignore",
    ),
    FlagSpec::value("bundle", "path to the root of the bundle directory").alias(&["b"]),
    FlagSpec::boolean("detach", "detach from the container's process").alias(&["d"]),
    FlagSpec::value("pid-file", "specify the file to write the process id to"),
    FlagSpec::boolean("no-subreaper", "disable the use of the subreaper"),
    FlagSpec::boolean(
        "no-pivot",
        "do not use pivot root to jail the process inside rootfs",
    ),
    FlagSpec::repeated(
        "empty-ns",
        "create a namespace, but don't restore its properties",
    ),
    FlagSpec::boolean("auto-dedup", "enable auto deduplication of memory images"),
    FlagSpec::boolean(
        "lazy-pages",
        "use userfaultfd to lazily restore memory pages",
    ),
    FlagSpec::value("lsm-profile", "LSM profile for the restore, TYPE:NAME"),
    FlagSpec::value("lsm-mount-context", "LSM mount context for the restore"),
    FlagSpec::value("parent-path", "accepted for go-runc compatibility"),
    FlagSpec::boolean("tcp-close", "accepted for crun/podman compatibility"),
    FlagSpec::boolean("no-new-keyring", "do not create a new session keyring"),
    FlagSpec::int(
        "preserve-fds",
        "pass N additional file descriptors to the container",
    ),
    FlagSpec::value(
        "pidfd-socket",
        "AF_UNIX socket that receives the init process pidfd",
    ),
    FlagSpec::value(
        "import",
        "stasis: restore from a kubelet/CRI-O checkpoint archive, applying its rootfs diff to the bundle's rootfs",
    ),
    HELP,
];

pub static CHECKPOINT: VerbSpec = VerbSpec {
    name: "checkpoint",
    args: "<container-id>",
    about: "checkpoint a running container",
    flags: CHECKPOINT_FLAGS,
};

pub static RESTORE: VerbSpec = VerbSpec {
    name: "restore",
    args: "<container-id>",
    about: "restore a container from a previous checkpoint",
    flags: RESTORE_FLAGS,
};

fn path(p: &Parsed, name: &str) -> Option<PathBuf> {
    p.str(name).filter(|s| !s.is_empty()).map(PathBuf::from)
}

fn cgroups_mode(p: &Parsed) -> Result<Option<ManageCgroupsMode>, UsageError> {
    match p.str("manage-cgroups-mode") {
        None | Some("") => Ok(None),
        Some(m) => ManageCgroupsMode::parse(m).map(Some),
    }
}

fn empty_ns(p: &Parsed) -> Result<Vec<String>, UsageError> {
    p.all("empty-ns")
        .into_iter()
        .map(|ns| match ns {
            "network" => Ok(ns.to_string()),
            other => Err(UsageError::invalid(format!(
                "namespace {other:?} is not supported"
            ))),
        })
        .collect()
}

fn int_flag<T: TryFrom<i64>>(p: &Parsed, name: &str, default: T) -> Result<T, UsageError> {
    match p.int(name) {
        None => Ok(default),
        Some(v) => T::try_from(v)
            .map_err(|_| UsageError::invalid(format!("invalid value \"{v}\" for flag -{name}"))),
    }
}

impl CheckpointOpts {
    pub(super) fn from_parsed(p: &Parsed) -> Result<Self, UsageError> {
        let status_fd = int_flag::<i32>(p, "status-fd", -1)?;
        Ok(Self {
            id: one_id(&CHECKPOINT, p)?,
            image_path: path(p, "image-path"),
            work_path: path(p, "work-path"),
            parent_path: path(p, "parent-path"),
            leave_running: p.bool("leave-running"),
            tcp_established: p.bool("tcp-established"),
            tcp_skip_in_flight: p.bool("tcp-skip-in-flight"),
            link_remap: p.bool("link-remap"),
            ext_unix_sk: p.bool("ext-unix-sk"),
            shell_job: p.bool("shell-job"),
            lazy_pages: p.bool("lazy-pages"),
            status_fd: (status_fd >= 0).then_some(status_fd),
            page_server: p
                .str("page-server")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            file_locks: p.bool("file-locks"),
            pre_dump: p.bool("pre-dump"),
            manage_cgroups_mode: cgroups_mode(p)?,
            empty_ns: empty_ns(p)?,
            auto_dedup: p.bool("auto-dedup"),
            export: path(p, "export"),
            rootfs_base: path(p, "rootfs-base"),
        })
    }
}

impl RestoreOpts {
    pub(super) fn from_parsed(p: &Parsed) -> Result<Self, UsageError> {
        let string = |name| p.str(name).filter(|s| !s.is_empty()).map(str::to_string);
        Ok(Self {
            id: one_id(&RESTORE, p)?,
            bundle: path(p, "bundle"),
            console_socket: path(p, "console-socket"),
            image_path: path(p, "image-path"),
            work_path: path(p, "work-path"),
            detach: p.bool("detach"),
            pid_file: path(p, "pid-file"),
            no_subreaper: p.bool("no-subreaper"),
            no_pivot: p.bool("no-pivot"),
            tcp_established: p.bool("tcp-established"),
            ext_unix_sk: p.bool("ext-unix-sk"),
            shell_job: p.bool("shell-job"),
            file_locks: p.bool("file-locks"),
            manage_cgroups_mode: cgroups_mode(p)?,
            empty_ns: empty_ns(p)?,
            auto_dedup: p.bool("auto-dedup"),
            lazy_pages: p.bool("lazy-pages"),
            lsm_profile: string("lsm-profile"),
            lsm_mount_context: string("lsm-mount-context"),
            parent_path: path(p, "parent-path"),
            tcp_close: p.bool("tcp-close"),
            no_new_keyring: p.bool("no-new-keyring"),
            preserve_fds: int_flag::<u32>(p, "preserve-fds", 0)?,
            pidfd_socket: path(p, "pidfd-socket"),
            import: path(p, "import"),
        })
    }
}
