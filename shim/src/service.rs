//! The task service's state and logic: containers, their init and exec
//! processes, and what each Task API call does to them. `task.rs` adapts
//! the ttrpc calls to these methods.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::types::mount::Mount;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Context, ExitSignal};

use crate::error::{io_err, Result, ShimError};
use crate::mount;
use crate::reaper::{Exit, Reaper};
use crate::runtime::{is_gone, CmdIo, Runtime};
use crate::stdio::{self, ProcessIo, StdioPaths};

/// Exit status reported for a process that was killed without its exit being
/// seen (SIGKILL), as containerd's shims do.
pub const KILLED: u32 = 128 + 9;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    Paused,
}

pub struct Process {
    pub exec_id: String,
    /// 0 until the process exists (an exec before start, a restore before start).
    pub pid: i32,
    pub phase: Phase,
    pub exit: Option<Exit>,
    pub stdio: StdioPaths,
    pub io: ProcessIo,
    /// An exec's OCI process spec (JSON), as containerd sent it.
    pub spec: Vec<u8>,
}

impl Process {
    fn new(exec_id: &str, stdio: StdioPaths) -> Self {
        Self {
            exec_id: exec_id.to_string(),
            pid: 0,
            phase: Phase::Created,
            exit: None,
            stdio,
            io: ProcessIo::default(),
            spec: Vec::new(),
        }
    }

    pub fn running(&self) -> bool {
        self.exit.is_none() && self.pid > 0 && self.phase != Phase::Created
    }
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// `<bundle>/rootfs`, when the shim mounted containerd's rootfs there.
    pub mounted_rootfs: Option<PathBuf>,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    /// The image to restore from at start (containerd's `checkpoint`).
    pub checkpoint: Option<PathBuf>,
}

impl Container {
    pub fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!(
                "process {exec_id} of task {} does not exist",
                self.id
            ))
        })
    }

    fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        let id = self.id.clone();
        self.execs.get_mut(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("process {exec_id} of task {id} does not exist"))
        })
    }
}

pub struct Service {
    pub namespace: String,
    pub runtime: Runtime,
    reaper: Reaper,
    publisher: RemotePublisher,
    containers: Mutex<HashMap<String, Container>>,
    /// Signalled whenever a process exits or a container goes away.
    exited: Condvar,
    /// One runtime operation at a time (create, start, checkpoint, ...).
    ops: Mutex<()>,
    exits: Mutex<Sender<Exit>>,
    /// Ids of containers in which the OOM killer acted (see `oom`).
    ooms: Mutex<Sender<String>>,
    pub shutdown: Arc<ExitSignal>,
}

fn read_pid(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path).map_err(io_err(format!("read {}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|_| ShimError::Runtime(format!("{}: not a pid: {text:?}", path.display())))
}

impl Service {
    pub fn new(
        namespace: String,
        runtime: Runtime,
        reaper: Reaper,
        publisher: RemotePublisher,
        shutdown: Arc<ExitSignal>,
    ) -> Arc<Self> {
        let (tx, rx) = channel();
        let (oom_tx, oom_rx) = channel::<String>();
        let svc = Arc::new(Self {
            namespace,
            runtime,
            reaper,
            publisher,
            containers: Mutex::new(HashMap::new()),
            exited: Condvar::new(),
            ops: Mutex::new(()),
            exits: Mutex::new(tx),
            ooms: Mutex::new(oom_tx),
            shutdown,
        });
        let weak = Arc::downgrade(&svc);
        std::thread::Builder::new()
            .name("exits".into())
            .spawn(move || Self::handle_exits(weak, rx))
            .expect("spawn exit thread");
        let weak = Arc::downgrade(&svc);
        std::thread::Builder::new()
            .name("ooms".into())
            .spawn(move || {
                for id in oom_rx {
                    let Some(svc) = weak.upgrade() else { return };
                    svc.publish(
                        containerd_shim::protos::topics::TASK_OOM_EVENT_TOPIC,
                        Box::new(crate::events::oom(&id)),
                    );
                }
            })
            .expect("spawn oom thread");
        svc
    }

    pub fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
        {
            log::warn!("publish {topic}: {e}");
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.containers.lock().unwrap()
    }

    pub fn op(&self) -> MutexGuard<'_, ()> {
        self.ops.lock().unwrap()
    }

    fn watch(&self, pid: i32) {
        let tx = self.exits.lock().unwrap().clone();
        self.reaper.watch(pid, tx);
    }

    /// Publishes TaskOOM for container `id` whenever the OOM killer acts in
    /// the memory cgroup of its init `pid`, as containerd's runc shim does.
    fn watch_oom(&self, id: &str, pid: i32) {
        let tx = self.ooms.lock().unwrap().clone();
        let cid = id.to_string();
        if let Err(e) = crate::oom::watch(pid, move || {
            let _ = tx.send(cid.clone());
        }) {
            log::warn!("no OOM events for {id}: {e}");
        }
    }

    /// Records each exit of a container process and publishes TaskExit.
    fn handle_exits(svc: std::sync::Weak<Self>, rx: Receiver<Exit>) {
        for exit in rx {
            let Some(svc) = svc.upgrade() else { return };
            let mut event = None;
            {
                let mut map = svc.lock();
                for c in map.values_mut() {
                    let procs = std::iter::once(&mut c.init).chain(c.execs.values_mut());
                    if let Some(p) = procs
                        .into_iter()
                        .find(|p| p.pid == exit.pid && p.exit.is_none())
                    {
                        p.exit = Some(exit);
                        let id = if p.exec_id.is_empty() {
                            c.id.clone()
                        } else {
                            p.exec_id.clone()
                        };
                        event = Some(crate::events::exit(&c.id, &id, &exit));
                        break;
                    }
                }
                svc.exited.notify_all();
            }
            if let Some(ev) = event {
                svc.publish(
                    containerd_shim::protos::topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(ev),
                );
            }
        }
    }

    /// Create: mount the rootfs, open stdio and run `stasis create`; with a
    /// checkpoint, only remember it: the restore runs at start, as with
    /// containerd's runc shim (ctr and the CRI start the task next).
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        rootfs: &[Mount],
        stdio: StdioPaths,
        checkpoint: &str,
    ) -> Result<i32> {
        let _op = self.op();
        if self.lock().contains_key(id) {
            return Err(ShimError::AlreadyExists(format!(
                "task {id} already exists"
            )));
        }
        if stdio.terminal && !checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(
                "restoring a container with a terminal".into(),
            ));
        }
        let checkpoint = (!checkpoint.is_empty()).then(|| PathBuf::from(checkpoint));
        if let Some(ck) = &checkpoint {
            if !ck.is_dir() {
                return Err(ShimError::InvalidArgument(format!(
                    "checkpoint {} is not a directory",
                    ck.display()
                )));
            }
        }
        let mounted_rootfs = mount::mount_rootfs(bundle, rootfs)?;
        let mut init = Process::new("", stdio);
        let result = (|| -> Result<()> {
            if checkpoint.is_some() {
                return Ok(());
            }
            let (fds, prepared) = stdio::open(&init.stdio, (id, &self.namespace))?;
            let pid_file = bundle.join("init.pid");
            let mut args = vec![
                "create".to_string(),
                "--bundle".into(),
                bundle.display().to_string(),
            ];
            args.extend(["--pid-file".into(), pid_file.display().to_string()]);
            args.extend(prepared.args());
            args.push(id.to_string());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.runtime.run(bundle, &args, CmdIo::Process(fds))?;
            init.io = prepared.attach(&init.stdio)?;
            init.pid = read_pid(&pid_file)?;
            Ok(())
        })();
        if let Err(e) = result {
            if let Some(r) = &mounted_rootfs {
                mount::unmount(r);
            }
            return Err(e);
        }
        let pid = init.pid;
        self.lock().insert(
            id.to_string(),
            Container {
                id: id.to_string(),
                bundle: bundle.to_path_buf(),
                mounted_rootfs,
                init,
                execs: HashMap::new(),
                checkpoint,
            },
        );
        if pid > 0 {
            self.watch(pid);
        }
        Ok(pid)
    }

    fn snapshot<T>(&self, id: &str, f: impl FnOnce(&Container) -> Result<T>) -> Result<T> {
        let map = self.lock();
        let c = map
            .get(id)
            .ok_or_else(|| ShimError::NotFound(format!("task {id} does not exist")))?;
        f(c)
    }

    fn update_process(&self, id: &str, exec_id: &str, f: impl FnOnce(&mut Process)) -> Result<()> {
        let mut map = self.lock();
        let c = map
            .get_mut(id)
            .ok_or_else(|| ShimError::NotFound(format!("task {id} does not exist")))?;
        f(c.process_mut(exec_id)?);
        Ok(())
    }

    /// Start: `stasis start`, or the restore of the checkpoint given at
    /// create, or `stasis exec --detach` for an exec. Returns the pid.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<i32> {
        let _op = self.op();
        let (bundle, phase, stdio, checkpoint, spec) = self.snapshot(id, |c| {
            let p = c.process(exec_id)?;
            Ok((
                c.bundle.clone(),
                p.phase,
                p.stdio.clone(),
                c.checkpoint.clone(),
                p.spec.clone(),
            ))
        })?;
        if phase != Phase::Created {
            return Err(ShimError::FailedPrecondition(format!(
                "process {id}/{exec_id} is already started"
            )));
        }
        let pid = if !exec_id.is_empty() {
            let spec_file = bundle.join(format!("exec-{exec_id}.json"));
            let pid_file = bundle.join(format!("exec-{exec_id}.pid"));
            std::fs::write(&spec_file, &spec)
                .map_err(io_err(format!("write {}", spec_file.display())))?;
            let (fds, prepared) = stdio::open(&stdio, (id, &self.namespace))?;
            let mut args = vec![
                "exec".to_string(),
                "--process".into(),
                spec_file.display().to_string(),
            ];
            args.extend([
                "--detach".into(),
                "--pid-file".into(),
                pid_file.display().to_string(),
            ]);
            args.extend(prepared.args());
            args.push(id.to_string());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let res = self
                .runtime
                .run(&bundle, &args, CmdIo::Process(fds))
                .and_then(|_| Ok((prepared.attach(&stdio)?, read_pid(&pid_file)?)));
            let _ = std::fs::remove_file(&spec_file);
            let _ = std::fs::remove_file(&pid_file);
            let (io, pid) = res?;
            self.update_process(id, exec_id, |p| {
                p.pid = pid;
                p.phase = Phase::Running;
                p.io = io;
            })?;
            pid
        } else if let Some(image) = checkpoint {
            let work = bundle.join("work").join("restore");
            std::fs::create_dir_all(&work).map_err(io_err(format!("create {}", work.display())))?;
            let pid_file = bundle.join("init.pid");
            let (fds, prepared) = stdio::open(&stdio, (id, &self.namespace))?;
            let io = prepared.attach(&stdio)?;
            let args = crate::checkpoint::restore_args(id, &bundle, &image, &work, &pid_file);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.runtime.run(&bundle, &args, CmdIo::Process(fds))?;
            let pid = read_pid(&pid_file)?;
            crate::checkpoint::discard_unpacked(&image);
            let mut map = self.lock();
            if let Some(c) = map.get_mut(id) {
                c.checkpoint = None;
                c.init.pid = pid;
                c.init.phase = Phase::Running;
                c.init.io = io;
            }
            drop(map);
            self.watch_oom(id, pid);
            pid
        } else {
            self.runtime
                .run(&bundle, &["start", id], CmdIo::Capture { stdin: None })?;
            let mut pid = 0;
            self.update_process(id, "", |p| {
                p.phase = Phase::Running;
                pid = p.pid;
            })?;
            self.watch_oom(id, pid);
            return Ok(pid);
        };
        self.watch(pid);
        Ok(pid)
    }

    /// Exec: remember the process; it runs at start.
    pub fn add_exec(
        &self,
        id: &str,
        exec_id: &str,
        stdio: StdioPaths,
        spec: Vec<u8>,
    ) -> Result<()> {
        let mut map = self.lock();
        let c = map
            .get_mut(id)
            .ok_or_else(|| ShimError::NotFound(format!("task {id} does not exist")))?;
        if c.execs.contains_key(exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "exec {exec_id} of task {id} already exists"
            )));
        }
        if c.init.exit.is_some() {
            return Err(ShimError::FailedPrecondition(format!(
                "task {id} has stopped"
            )));
        }
        let mut p = Process::new(exec_id, stdio);
        p.spec = spec;
        c.execs.insert(exec_id.to_string(), p);
        Ok(())
    }

    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let (bundle, pid, exited) = self.snapshot(id, |c| {
            let p = c.process(exec_id)?;
            Ok((c.bundle.clone(), p.pid, p.exit.is_some()))
        })?;
        if exited || pid == 0 {
            return Err(ShimError::NotFound("process already finished".into()));
        }
        if !exec_id.is_empty() {
            // SAFETY: kill(2) has no memory effects; pid is the exec's, not yet reaped.
            let rc = unsafe { libc::kill(pid, signal as i32) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ESRCH) {
                    return Err(ShimError::NotFound("process already finished".into()));
                }
                return Err(io_err(format!("kill {pid}"))(e));
            }
            return Ok(());
        }
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        let _op = self.op();
        match self
            .runtime
            .run(&bundle, &args, CmdIo::Capture { stdin: None })
        {
            Err(e) if is_gone(&e) => Err(ShimError::NotFound(format!(
                "process already finished: {e}"
            ))),
            r => r.map(|_| ()),
        }
    }

    /// Delete: an exec is forgotten once it has exited; the init's
    /// container is deleted from the runtime (killed first if it was only
    /// created), its rootfs unmounted.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(i32, Exit)> {
        let _op = self.op();
        if !exec_id.is_empty() {
            let mut map = self.lock();
            let c = map
                .get_mut(id)
                .ok_or_else(|| ShimError::NotFound(format!("task {id} does not exist")))?;
            let p = c.process(exec_id)?;
            if p.running() {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} is running"
                )));
            }
            let p = c.execs.remove(exec_id).expect("checked above");
            self.exited.notify_all();
            return Ok((p.pid, p.exit.unwrap_or_else(|| killed(p.pid))));
        }
        let (bundle, running, pid) =
            self.snapshot(id, |c| Ok((c.bundle.clone(), c.init.running(), c.init.pid)))?;
        if running {
            return Err(ShimError::FailedPrecondition(format!(
                "task {id} is running: kill it first"
            )));
        }
        match self.runtime.run(
            &bundle,
            &["delete", "--force", id],
            CmdIo::Capture { stdin: None },
        ) {
            Err(e) if !is_gone(&e) => return Err(e),
            _ => {}
        }
        let mut map = self.lock();
        let Some(c) = map.remove(id) else {
            return Err(ShimError::NotFound(format!("task {id} does not exist")));
        };
        self.exited.notify_all();
        drop(map);
        if let Some(r) = &c.mounted_rootfs {
            mount::unmount(r);
        }
        let _ = std::fs::remove_dir_all(bundle.join("work"));
        Ok((pid, c.init.exit.unwrap_or_else(|| killed(pid))))
    }

    /// Blocks until the process has exited.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let mut map = self.lock();
        loop {
            let c = map
                .get(id)
                .ok_or_else(|| ShimError::NotFound(format!("task {id} does not exist")))?;
            if let Some(exit) = c.process(exec_id)?.exit {
                return Ok(exit);
            }
            map = self.exited.wait(map).unwrap();
        }
    }

    /// The bundle of task `id`, which must be running.
    fn running_bundle(&self, id: &str) -> Result<PathBuf> {
        self.snapshot(id, |c| {
            if !c.init.running() {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {id} is not running"
                )));
            }
            Ok(c.bundle.clone())
        })
    }

    pub fn pause(&self, id: &str, pause: bool) -> Result<()> {
        let _op = self.op();
        let bundle = self.running_bundle(id)?;
        let verb = if pause { "pause" } else { "resume" };
        self.runtime
            .run(&bundle, &[verb, id], CmdIo::Capture { stdin: None })?;
        self.update_process(id, "", |p| {
            p.phase = if pause { Phase::Paused } else { Phase::Running }
        })
    }

    /// Checkpoint: `stasis checkpoint` (see checkpoint.rs for the options);
    /// returns the image dir. On failure the dump log is kept as
    /// `<bundle>/checkpoint-dump.log` and named in the error, as runc's
    /// shim does with CRIU's.
    pub fn checkpoint(
        &self,
        id: &str,
        path: &str,
        options: Option<&containerd_shim::protos::protobuf::well_known_types::any::Any>,
    ) -> Result<PathBuf> {
        let opts = crate::checkpoint::decode_options(options)?;
        let _op = self.op();
        let bundle = self.running_bundle(id)?;
        let plan = crate::checkpoint::plan(id, &bundle, path, &opts)?;
        if plan.own_work {
            let _ = std::fs::remove_dir_all(&plan.work);
        }
        let args: Vec<&str> = plan.args.iter().map(String::as_str).collect();
        let result = self
            .runtime
            .run(&bundle, &args, CmdIo::Capture { stdin: None });
        if let Err(e) = result {
            let kept = bundle.join("checkpoint-dump.log");
            let msg = match std::fs::copy(plan.work.join("dump.log"), &kept) {
                Ok(_) => format!("{e} path= {}", kept.display()),
                Err(_) => e.to_string(),
            };
            if plan.own_work {
                let _ = std::fs::remove_dir_all(&plan.work);
            }
            return Err(ShimError::Runtime(msg));
        }
        if plan.own_work {
            let _ = std::fs::remove_dir_all(&plan.work);
        }
        Ok(plan.image)
    }

    pub fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let _op = self.op();
        let bundle = self.snapshot(id, |c| Ok(c.bundle.clone()))?;
        self.runtime
            .run(
                &bundle,
                &["update", "--resources", "-", id],
                CmdIo::Capture {
                    stdin: Some(resources),
                },
            )
            .map(|_| ())
    }

    /// `stasis ps --format json`: the container's pids, each with its exec
    /// id when it is an exec's process.
    pub fn pids(&self, id: &str) -> Result<Vec<(i32, Option<String>)>> {
        let (bundle, execs) = self.snapshot(id, |c| {
            let execs: HashMap<i32, String> = c
                .execs
                .values()
                .filter(|p| p.pid > 0)
                .map(|p| (p.pid, p.exec_id.clone()))
                .collect();
            Ok((c.bundle.clone(), execs))
        })?;
        let out = self.runtime.run(
            &bundle,
            &["ps", "--format", "json", id],
            CmdIo::Capture { stdin: None },
        )?;
        let pids: Vec<i32> = serde_json::from_slice(&out.stdout)
            .map_err(|e| ShimError::Runtime(format!("stasis ps: {e}")))?;
        Ok(pids
            .into_iter()
            .map(|p| (p, execs.get(&p).cloned()))
            .collect())
    }

    /// `stasis events --stats`: runc's stats JSON.
    pub fn stats(&self, id: &str) -> Result<serde_json::Value> {
        let bundle = self.snapshot(id, |c| Ok(c.bundle.clone()))?;
        let out = self.runtime.run(
            &bundle,
            &["events", "--stats", id],
            CmdIo::Capture { stdin: None },
        )?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| ShimError::Runtime(format!("stasis events --stats: {e}")))
    }

    pub fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        self.snapshot(id, |c| c.process(exec_id)?.io.resize(width, height))
    }

    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        self.snapshot(id, |c| {
            c.process(exec_id)?.io.close_stdin();
            Ok(())
        })
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn with_container<T>(
        &self,
        id: &str,
        f: impl FnOnce(&Container) -> Result<T>,
    ) -> Result<T> {
        self.snapshot(id, f)
    }
}

fn killed(pid: i32) -> Exit {
    Exit {
        pid,
        status: KILLED,
        at: std::time::SystemTime::now(),
    }
}
