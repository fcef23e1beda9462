//! The private bundle a restore hands to the underlying runtime.
//!
//! `stasis restore` lets the runtime build the container (namespaces,
//! cgroups, mounts, rootfs, prestart/createRuntime hooks) from the caller's
//! config.json, but with stasis itself as the process: the restore stub, run
//! from a preserved fd as the container's pid 1, which rebuilds the dumped
//! tree for the engine to morph. The rewritten config lives in a directory
//! of stasis' own, one per container:
//!
//! ```text
//! /run/stasis/<root-key>/<id>/bundle/config.json   the rewritten config
//! /run/stasis/<root-key>/<id>/init.pid             the runtime's --pid-file
//! /run/stasis/<root-key>/<id>/original-config.json the caller's config (spec.dump of a later --export)
//! ```
//!
//! `<root-key>` is a hash of the runtime's state root, so equal ids under
//! different roots (containerd namespaces) never share a directory. The
//! directory goes away with `stasis delete` of the container.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cli::GlobalOpts;

/// Where stasis keeps its per-container files.
pub const STATE_DIR: &str = "/run/stasis";

/// The stub's argv: binary at fd 3, image dir at fd 4, control pipes at 5, 6.
pub const STUB_ARGS: [&str; 5] = [
    "/proc/self/fd/3",
    "restore-stub",
    "/proc/self/fd/4",
    "5",
    "6",
];

/// fds 3.. passed to the container with `--preserve-fds`.
pub const PRESERVED_FDS: u32 = 4;

/// Every capability by name, CAP_CHOWN (0) … CAP_CHECKPOINT_RESTORE (40).
#[rustfmt::skip]
const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
];

/// Hooks the runtime runs for a restore, as runc does with CRIU: the ones
/// that wire up the new namespaces, and poststop at delete. The others
/// belong to a process start that a restore does not have.
const KEPT_HOOKS: [&str; 3] = ["prestart", "createRuntime", "poststop"];

/// Rewrites a bundle's `config` (any unknown field kept) for the restore
/// stub; `bundle` is the absolute path of the original bundle. The stub
/// gets every capability in `caps` (a mask by capability number: those the
/// runtime can grant, see [`own_caps`]).
pub fn rewrite_config(config: &mut Value, bundle: &Path, caps: u64) -> anyhow::Result<()> {
    let obj = config
        .as_object_mut()
        .context("config.json is not a JSON object")?;

    // Paths relative to the bundle must survive the move to another bundle.
    let root = obj
        .get_mut("root")
        .and_then(Value::as_object_mut)
        .context("config.json has no root")?;
    let root_path = root
        .get("path")
        .and_then(Value::as_str)
        .context("config.json has no root.path")?;
    root.insert("path".into(), absolute(bundle, root_path).into());
    if let Some(mounts) = obj.get_mut("mounts").and_then(Value::as_array_mut) {
        for m in mounts.iter_mut().filter(|m| is_bind(m)) {
            if let Some(src) = m.get("source").and_then(Value::as_str) {
                let abs = absolute(bundle, src);
                m["source"] = abs.into();
            }
        }
    }

    let process = obj
        .entry("process")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .context("config.json process is not an object")?;
    process.insert("args".into(), json!(STUB_ARGS));
    process.insert("cwd".into(), "/".into());
    let user = process.entry("user").or_insert_with(|| json!({}));
    if let Some(user) = user.as_object_mut() {
        user.insert("uid".into(), 0.into());
        user.insert("gid".into(), 0.into());
        user.remove("additionalGids");
    }
    let caps: Vec<&str> = ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(n, _)| caps >> n & 1 == 1)
        .map(|(_, c)| *c)
        .collect();
    let caps = json!(caps);
    process.insert(
        "capabilities".into(),
        json!({
            "bounding": caps, "effective": caps, "inheritable": caps,
            "permitted": caps, "ambient": caps,
        }),
    );
    process.insert("noNewPrivileges".into(), false.into());
    process.remove("apparmorProfile");
    process.remove("selinuxLabel");
    if let Some(linux) = obj.get_mut("linux").and_then(Value::as_object_mut) {
        linux.remove("seccomp");
    }
    if let Some(hooks) = obj.get_mut("hooks").and_then(Value::as_object_mut) {
        hooks.retain(|name, _| KEPT_HOOKS.contains(&name.as_str()));
    }
    Ok(())
}

/// The capabilities we hold (permitted and in the bounding set), which is
/// what a runtime we start can give a container: a host may lack some
/// (asking for those fails the create with EPERM).
pub fn own_caps() -> anyhow::Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let mask = |key: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in status"))?;
        u64::from_str_radix(line.trim(), 16).with_context(|| format!("bad {key} {line:?}"))
    };
    Ok(mask("CapPrm:")? & mask("CapBnd:")?)
}

fn is_bind(m: &Value) -> bool {
    let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
    let opts = m.get("options").and_then(Value::as_array);
    ty == "bind" || opts.is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

fn absolute(base: &Path, p: &str) -> String {
    let p = Path::new(p);
    if p.is_absolute() {
        return p.to_string_lossy().into_owned();
    }
    base.join(p).to_string_lossy().into_owned()
}

/// FNV-1a, 64 bits: a stable, dependency-free key for a state root.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `/run/stasis/<root-key>/<id>` for the container `id` of `global`'s root.
pub fn private_dir(global: &GlobalOpts, id: &str) -> PathBuf {
    let root = global.state_root();
    // The same root however it was spelled (relative, trailing slash, symlinks).
    let root = fs::canonicalize(&root).unwrap_or(root);
    let key = format!("{:016x}", fnv1a(root.as_os_str().as_encoded_bytes()));
    Path::new(STATE_DIR).join(key).join(id)
}

/// A restore's private directory, created empty (0700).
#[derive(Debug)]
pub struct PrivateDir {
    pub path: PathBuf,
}

impl PrivateDir {
    /// Creates `dir`; one left behind by an earlier stasis that died is
    /// replaced (the caller checked that the runtime has no such container).
    pub fn create(dir: PathBuf) -> anyhow::Result<Self> {
        let parent = dir.parent().context("private dir has no parent")?;
        for _ in 0..3 {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("create {}", parent.display()))?;
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Self { path: dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    fs::remove_dir_all(&dir)
                        .with_context(|| format!("remove stale {}", dir.display()))?;
                }
                // The parent went away under a concurrent `remove`: retry.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
            }
        }
        bail!("cannot create {}", dir.display())
    }

    pub fn bundle(&self) -> PathBuf {
        self.path.join("bundle")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.path.join("init.pid")
    }

    /// Keeps the caller's config as it was, for a later `checkpoint
    /// --export` of the restored container (its `spec.dump`).
    pub fn write_original(&self, config: &Value) -> anyhow::Result<()> {
        let file = self.path.join(ORIGINAL_CONFIG);
        let text = serde_json::to_vec_pretty(config).context("serialise config.json")?;
        fs::write(&file, text).with_context(|| format!("write {}", file.display()))
    }

    /// Writes the rewritten config into `bundle/config.json`.
    pub fn write_config(&self, config: &Value) -> anyhow::Result<PathBuf> {
        let bundle = self.bundle();
        DirBuilder::new()
            .mode(0o700)
            .create(&bundle)
            .with_context(|| format!("create {}", bundle.display()))?;
        let file = bundle.join("config.json");
        let text = serde_json::to_vec(config).context("serialise config.json")?;
        fs::write(&file, text).with_context(|| format!("write {}", file.display()))?;
        Ok(bundle)
    }
}

const ORIGINAL_CONFIG: &str = "original-config.json";

/// The caller's own config of a container that stasis restored, whose
/// runtime state names `bundle`, stasis' private bundle; `None` for any other.
pub fn original_config(bundle: &Path) -> Option<PathBuf> {
    if !bundle.starts_with(STATE_DIR) || bundle.file_name()? != "bundle" {
        return None;
    }
    Some(bundle.parent()?.join(ORIGINAL_CONFIG)).filter(|p| p.is_file())
}

/// Removes a container's private directory, and its root-key parent once
/// empty. Missing is fine.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        // Fails, harmlessly, while other containers of that root have one.
        let _ = fs::remove_dir(parent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "x-unknown": {"kept": true},
            "root": {"path": "rootfs", "readonly": true},
            "process": {
                "terminal": true,
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [5, 6], "umask": 18},
                "args": ["sh"], "cwd": "/home", "env": ["PATH=/bin"],
                "capabilities": {"bounding": ["CAP_KILL"]},
                "noNewPrivileges": true,
                "apparmorProfile": "docker-default", "selinuxLabel": "system_u:x",
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
            },
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]},
                {"destination": "/etc/hosts", "source": "/etc/hosts", "options": ["bind", "ro"]}
            ],
            "hooks": {
                "prestart": [{"path": "/bin/a"}], "createRuntime": [{"path": "/bin/b"}],
                "createContainer": [{"path": "/bin/c"}], "startContainer": [{"path": "/bin/d"}],
                "poststart": [{"path": "/bin/e"}], "poststop": [{"path": "/bin/f"}]
            },
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}, "namespaces": [{"type": "pid"}]}
        })
    }

    #[test]
    fn config_is_rewritten_for_the_stub() {
        let mut c = sample();
        rewrite_config(&mut c, Path::new("/b"), u64::MAX).unwrap();
        assert_eq!(c["root"], json!({"path": "/b/rootfs", "readonly": true}));
        assert_eq!(c["x-unknown"], json!({"kept": true}));
        let p = &c["process"];
        assert_eq!(
            p["args"],
            json!([
                "/proc/self/fd/3",
                "restore-stub",
                "/proc/self/fd/4",
                "5",
                "6"
            ])
        );
        assert_eq!(p["cwd"], "/");
        assert_eq!(p["user"], json!({"uid": 0, "gid": 0, "umask": 18}));
        assert_eq!(p["terminal"], true);
        assert_eq!(p["noNewPrivileges"], false);
        assert!(p.get("apparmorProfile").is_none() && p.get("selinuxLabel").is_none());
        assert_eq!(p["env"], json!(["PATH=/bin"]));
        assert_eq!(p["rlimits"][0]["type"], "RLIMIT_NOFILE");
        for set in [
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ] {
            let caps = p["capabilities"][set].as_array().unwrap();
            assert_eq!(caps.len(), 41, "{set}");
            assert_eq!(caps[0], "CAP_CHOWN");
            assert_eq!(caps[21], "CAP_SYS_ADMIN");
            assert_eq!(caps[40], "CAP_CHECKPOINT_RESTORE");
        }
        assert_eq!(c["mounts"][0]["source"], "proc", "only bind sources move");
        assert_eq!(c["mounts"][1]["source"], "/b/data");
        assert_eq!(c["mounts"][2]["source"], "/etc/hosts");
        let hooks: Vec<&String> = c["hooks"].as_object().unwrap().keys().collect();
        assert_eq!(hooks, ["createRuntime", "poststop", "prestart"]);
        assert!(c["linux"].get("seccomp").is_none());
        assert_eq!(c["linux"]["namespaces"], json!([{"type": "pid"}]));
    }

    #[test]
    fn only_caps_we_hold_are_asked_for() {
        let mut c = sample();
        // CAP_SYS_RESOURCE (24) missing, as on some hosts.
        rewrite_config(&mut c, Path::new("/b"), 0x1ff_feff_ffff).unwrap();
        let caps = c["process"]["capabilities"]["permitted"]
            .as_array()
            .unwrap();
        assert_eq!(caps.len(), 40);
        assert!(!caps.iter().any(|c| c == "CAP_SYS_RESOURCE"));
        assert!(own_caps().is_ok());
    }

    #[test]
    fn minimal_and_invalid_configs() {
        let mut c = json!({"root": {"path": "/abs/rootfs"}});
        rewrite_config(&mut c, Path::new("/b"), u64::MAX).unwrap();
        assert_eq!(c["root"]["path"], "/abs/rootfs");
        assert_eq!(c["process"]["user"]["uid"], 0);
        assert!(rewrite_config(&mut json!({}), Path::new("/b"), 0).is_err());
        assert!(rewrite_config(&mut json!([1]), Path::new("/b"), 0).is_err());
    }

    #[test]
    fn private_dirs_differ_by_root() {
        let g = |root: &str| GlobalOpts {
            root: Some(root.into()),
            ..Default::default()
        };
        let a = private_dir(&g("/nonexistent/a"), "c1");
        let b = private_dir(&g("/nonexistent/b"), "c1");
        assert_ne!(a, b);
        assert_eq!(a, private_dir(&g("/nonexistent/a"), "c1"));
        assert!(a.starts_with(STATE_DIR) && a.ends_with("c1"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
