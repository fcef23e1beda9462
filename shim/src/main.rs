//! containerd-shim-stasis-v2: a containerd shim v2 (runtime type
//! `io.containerd.stasis.v2`) that runs containers with the `stasis`
//! binary, with runc's command line, and implements the Task API's
//! checkpoint and restore-at-create with stasis' own engine.
//!
//! Built on the `containerd-shim` crate (sync flavour): it parses
//! containerd's flags, spawns the long-lived shim on `start`, serves ttrpc
//! and publishes events. This binary supplies the task service.

mod binary_log;
mod checkpoint;
mod console;
mod error;
mod events;
mod mount;
mod oom;
mod reaper;
mod runtime;
mod service;
mod stats;
mod stdio;
mod task;

use std::sync::Arc;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};

use crate::reaper::Reaper;
use crate::runtime::Runtime;

const RUNTIME_ID: &str = "io.containerd.stasis.v2";

struct Shim {
    namespace: String,
    id: String,
    bundle: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for Shim {
    type T = task::TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Shim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle: args.bundle.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// One shim per container, or per Kubernetes pod: its socket is named
    /// after containerd's address, the namespace and the grouping id
    /// (containerd's convention). When that socket already answers, the
    /// spawned process leaves the container to the shim behind it
    /// (containerd-shim's `AddrInUse` path).
    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        let grouping = grouping(&opts.id);
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    /// `containerd-shim-stasis-v2 delete`: containerd's cleanup after a shim
    /// died. Deletes the container from stasis and unmounts its rootfs.
    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir()
                .map_err(|e| containerd_shim::Error::Other(format!("cwd: {e}")))?
        } else {
            self.bundle.clone().into()
        };
        let reaper =
            Reaper::start().map_err(|e| containerd_shim::Error::Other(format!("reaper: {e}")))?;
        let rt = Runtime::new(
            runtime::find_binary(),
            runtime::state_root(&self.namespace),
            reaper,
        );
        let io = runtime::CmdIo::Capture { stdin: None };
        if let Err(e) = rt.run(&bundle, &["delete", "--force", &self.id], io) {
            log::warn!("cleanup of {}: {e}", self.id);
        }
        mount::unmount(&bundle.join("rootfs"));
        remove_socket(&bundle);
        Ok(DeleteResponse {
            exit_status: service::KILLED,
            exited_at: Some(events::timestamp(std::time::SystemTime::now())).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let reaper = Reaper::start().expect("start the reaper");
        let rt = Runtime::new(
            runtime::find_binary(),
            runtime::state_root(&self.namespace),
            reaper.clone(),
        );
        log::info!(
            "stasis binary {}, root {}",
            rt.bin.display(),
            rt.root.display()
        );
        task::TaskService(service::Service::new(
            self.namespace.clone(),
            rt,
            reaper,
            publisher,
            self.exit.clone(),
        ))
    }
}

/// The CRI plugin names a container's pod sandbox in this annotation.
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// The shim a container belongs to: its pod's sandbox id when the spec in
/// the bundle (containerd runs `start` there) names one, as containerd's
/// runc shim groups them; else the container's own id.
fn grouping(id: &str) -> String {
    std::fs::read("config.json")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|spec| spec["annotations"][SANDBOX_ID].as_str().map(str::to_string))
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| id.to_string())
}

/// Removes the dead shim's socket, named in `<bundle>/address`.
fn remove_socket(bundle: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = address.trim().trim_start_matches("unix://");
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

fn main() {
    // The shim reaps its children itself (reaper.rs), so that the exit
    // status of each stasis command reaches whoever runs it.
    let config = Config {
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<Shim>(RUNTIME_ID, Some(config));
}
