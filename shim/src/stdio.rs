//! A process's stdio as containerd hands it over: FIFO paths (or
//! `file://` or `binary://` URIs) for stdin, stdout and stderr, any of them
//! empty.
//!
//! As with the runc shim, the runtime and the container never see the
//! FIFOs: each stream is a pipe whose far end the shim copies to or from the
//! FIFO in a thread. The container's output then does not depend on
//! whether a client has the FIFO open, and stdin can be closed on request
//! (`CloseIO`). A process with a terminal gets a pty from the runtime
//! instead (console.rs).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio as ChildStdio;
use std::sync::{Arc, Mutex};

use crate::error::{io_err, Result, ShimError};

/// The stdio containerd asked for.
#[derive(Clone, Debug, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What the runtime command gets as its fds 0, 1 and 2.
pub struct ChildFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl ChildFds {
    pub fn apply(self, cmd: &mut std::process::Command) {
        cmd.stdin(ChildStdio::from(self.stdin))
            .stdout(ChildStdio::from(self.stdout))
            .stderr(ChildStdio::from(self.stderr));
    }
}

/// The shim's side of a process's stdio: the stdin pipe's writer, dropped
/// by `close_stdin` (the copying thread holds it only while writing), or
/// the pty master of a process with a terminal.
#[derive(Clone, Default)]
pub struct ProcessIo {
    stdin: Arc<Mutex<Option<File>>>,
    console: Arc<Mutex<Option<Arc<File>>>>,
}

impl ProcessIo {
    pub fn close_stdin(&self) {
        self.stdin.lock().unwrap().take();
    }

    pub fn set_console(&self, master: Arc<File>) {
        *self.console.lock().unwrap() = Some(master);
    }

    /// Resizes the terminal; nothing to do for a process without one.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        match self.console.lock().unwrap().as_ref() {
            Some(master) => crate::console::resize(master, width, height),
            None => Ok(()),
        }
    }
}

/// The shim's side of a process's stdio before the runtime has run.
pub struct Attach {
    io: ProcessIo,
    /// For a terminal: the runtime gets `--console-socket <path>`.
    console: Option<crate::console::ConsoleSocket>,
}

impl Attach {
    /// The runtime's extra arguments for this stdio.
    pub fn args(&self) -> Vec<String> {
        match &self.console {
            Some(c) => vec!["--console-socket".into(), c.path().display().to_string()],
            None => Vec::new(),
        }
    }

    /// After the runtime command succeeded: with a terminal, receive the pty
    /// master and start copying. Returns the shim's side of the stdio.
    pub fn attach(self, paths: &StdioPaths) -> Result<ProcessIo> {
        if let Some(socket) = self.console {
            let master = socket.receive()?;
            self.io.set_console(crate::console::connect(master, paths)?);
        }
        Ok(self.io)
    }
}

fn dev_null(write: bool) -> Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map_err(io_err("open /dev/null"))?;
    Ok(f.into())
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> Result<(File, File)> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()))?;
    Ok((File::from(r), File::from(w)))
}

/// An output stream: the fd the process writes to.
fn output(path: &str, name: &'static str) -> Result<OwnedFd> {
    if path.is_empty() {
        return dev_null(true);
    }
    if let Some(file) = path.strip_prefix("file://") {
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(file)
            .map_err(io_err(format!("open {name} log {file}")))?;
        return Ok(f.into());
    }
    if path.contains("://") {
        return Err(ShimError::Unimplemented(format!(
            "{name} {path}: only FIFOs and file:// are supported here (a binary:// URI on stdout takes both streams)"
        )));
    }
    // Read and write: the open does not wait for a reader, and writes never
    // fail with EPIPE when the client has gone (the FIFO buffers, then the
    // copy blocks), as with the runc shim.
    let fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(format!("open {name} fifo {path}")))?;
    let (mut r, w) = pipe()?;
    std::thread::Builder::new()
        .name(format!("copy-{name}"))
        .spawn(move || {
            let mut fifo = fifo;
            let mut buf = [0u8; 32 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if fifo.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            // Dropping the FIFO (our last writer) gives the client EOF.
        })
        .map_err(io_err("spawn copy thread"))?;
    Ok(w.into())
}

/// The stdin stream: the fd the process reads from.
fn input(path: &str, io: &ProcessIo) -> Result<OwnedFd> {
    if path.is_empty() {
        return dev_null(false);
    }
    let (r, w) = pipe()?;
    *io.stdin.lock().unwrap() = Some(w);
    let (path, writer) = (path.to_string(), io.stdin.clone());
    std::thread::Builder::new()
        .name("copy-stdin".into())
        .spawn(move || {
            // Blocks until the client opens its end; EOF when it closes it.
            let Ok(mut fifo) = OpenOptions::new().read(true).open(&path) else {
                writer.lock().unwrap().take();
                return;
            };
            let mut buf = [0u8; 32 * 1024];
            loop {
                let n = match fifo.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut w = writer.lock().unwrap();
                let written = w
                    .as_mut()
                    .is_some_and(|pipe| pipe.write_all(&buf[..n]).is_ok());
                if !written {
                    break;
                }
            }
            writer.lock().unwrap().take();
        })
        .map_err(io_err("spawn copy thread"))?;
    Ok(r.into())
}

/// Opens the process's stdio: the fds to give the runtime, and the shim's
/// side. Copying starts at once and ends by itself when the process's
/// streams close. With a terminal the runtime's own stdio is /dev/null and
/// the copying starts at `Attach::attach`. `log` is the container's id and
/// namespace, for a `binary://` logger.
pub fn open(paths: &StdioPaths, log: (&str, &str)) -> Result<(ChildFds, Attach)> {
    let io = ProcessIo::default();
    if paths.terminal {
        let fds = ChildFds {
            stdin: dev_null(false)?,
            stdout: dev_null(true)?,
            stderr: dev_null(true)?,
        };
        let console = Some(crate::console::ConsoleSocket::new()?);
        return Ok((fds, Attach { io, console }));
    }
    // One logger takes both output streams (containerd looks at stdout's URI).
    let (stdout, stderr) = match crate::binary_log::Logger::parse(&paths.stdout) {
        Some(logger) => logger.start(log.0, log.1)?,
        None if paths.stdout.starts_with("binary://") => {
            return Err(ShimError::InvalidArgument(format!(
                "stdout {}: not a valid binary:// log URI (it needs an absolute, correctly escaped path)",
                paths.stdout
            )))
        }
        None => (output(&paths.stdout, "stdout")?, output(&paths.stderr, "stderr")?),
    };
    let fds = ChildFds {
        stdin: input(&paths.stdin, &io)?,
        stdout,
        stderr,
    };
    Ok((fds, Attach { io, console: None }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn mkfifo(path: &std::path::Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(std::fs::metadata(path).unwrap().file_type().is_fifo());
    }

    #[test]
    fn output_is_copied_to_the_fifo_and_ends_with_eof() {
        let dir = std::env::temp_dir().join(format!("shim-stdio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        mkfifo(&out);
        let paths = StdioPaths {
            stdout: out.display().to_string(),
            ..Default::default()
        };
        let (fds, _attach) = open(&paths, ("c", "ns")).unwrap();
        let mut reader = File::open(&out).unwrap();
        let mut w = File::from(fds.stdout);
        w.write_all(b"hello\n").unwrap();
        drop(w);
        drop(fds.stdin);
        drop(fds.stderr);
        let mut got = String::new();
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_terminal_gets_a_console_socket() {
        let paths = StdioPaths {
            terminal: true,
            ..Default::default()
        };
        let (_fds, p) = open(&paths, ("c", "ns")).unwrap();
        let args = p.args();
        assert_eq!(args[0], "--console-socket");
        assert!(std::path::Path::new(&args[1]).exists());
        drop(p);
        assert!(
            !std::path::Path::new(&args[1]).exists(),
            "the socket is removed"
        );
    }
}
