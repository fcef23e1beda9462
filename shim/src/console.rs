//! Terminals: a process with `terminal: true` gets a pty from the runtime,
//! which sends the master side over `--console-socket` (runc's
//! protocol: one message with the master fd as SCM_RIGHTS). The shim then
//! copies the FIFOs to and from the master, and resizes it on request.

use std::fs::{File, OpenOptions};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::error::{io_err, Result, ShimError};
use crate::stdio::StdioPaths;

/// A console socket waiting for the runtime's pty master; removed on drop.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// A fresh socket under /tmp (a bundle path may exceed sun_path's
    /// 108 bytes).
    pub fn new() -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "stasis-shim-pty-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(io_err(format!("bind {}", path.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("console socket"))?;
        Ok(Self { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master the runtime sent (it has exited, so the connection
    /// is queued already; a short wait covers a slow sender).
    pub fn receive(&self) -> Result<File> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (conn, _) = loop {
            match self.listener.accept() {
                Ok(c) => break c,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io_err("receive the pty master")(e)),
            }
        };
        conn.set_nonblocking(false)
            .map_err(io_err("console socket"))?;
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| io_err("recvmsg on the console socket")(e.into()))?;
        for cmsg in msg
            .cmsgs()
            .map_err(|e| io_err("console socket message")(e.into()))?
        {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd for us; nobody else owns it.
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        Err(ShimError::Runtime(
            "the runtime sent no pty master on the console socket".into(),
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies between the FIFOs and the pty master: stdin into it, its output
/// to stdout (a terminal merges stdout and stderr).
pub fn connect(master: File, paths: &StdioPaths) -> Result<Arc<File>> {
    let master = Arc::new(master);
    if !paths.stdout.is_empty() {
        let mut fifo = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&paths.stdout)
            .map_err(io_err(format!("open stdout fifo {}", paths.stdout)))?;
        let m = master.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 32 * 1024];
            // EIO once every slave fd is closed: the process has exited.
            while let Ok(n) = (&*m).read(&mut buf) {
                if n == 0 || fifo.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    if !paths.stdin.is_empty() {
        let (m, path) = (master.clone(), paths.stdin.clone());
        std::thread::spawn(move || {
            let Ok(mut fifo) = File::open(&path) else {
                return;
            };
            let mut buf = [0u8; 32 * 1024];
            while let Ok(n) = fifo.read(&mut buf) {
                if n == 0 || (&*m).write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(master)
}

/// Sets the terminal's window size.
pub fn resize(master: &File, width: u32, height: u32) -> Result<()> {
    let ws = libc::winsize {
        ws_row: height as u16,
        ws_col: width as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid
    // for the call; the fd is an open pty master.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io_err("resize the terminal")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
