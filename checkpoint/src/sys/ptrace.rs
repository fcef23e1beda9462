//! Thin ptrace wrappers over the requests the engine uses (seize/interrupt,
//! register sets, signal mask and queue, rseq configuration).

use std::io;

pub type Regs = libc::user_regs_struct;

const PTRACE_GETREGSET: libc::c_uint = 0x4204;
const PTRACE_SETREGSET: libc::c_uint = 0x4205;
const PTRACE_SEIZE: libc::c_uint = 0x4206;
const PTRACE_INTERRUPT: libc::c_uint = 0x4207;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
pub const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
const NT_PRSTATUS: usize = 1;
const NT_X86_XSTATE: usize = 0x202;

pub const PTRACE_O_TRACESYSGOOD: u64 = 1;
pub const PTRACE_O_TRACECLONE: u64 = 8;
pub const PTRACE_O_EXITKILL: u64 = 1 << 20;
pub const PTRACE_O_SUSPEND_SECCOMP: u64 = 1 << 21;
pub const PTRACE_EVENT_CLONE: i32 = 3;
pub const PTRACE_EVENT_STOP: i32 = 128;

fn req(request: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes `addr`/`data` that are either integers or
    // pointers to live buffers of the size the request expects.
    let r = unsafe { libc::ptrace(request, tid, addr as *mut libc::c_void, data as *mut libc::c_void) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn seize(tid: i32, options: u64) -> io::Result<()> {
    req(PTRACE_SEIZE, tid, 0, options as usize).map(drop)
}

pub fn interrupt(tid: i32) -> io::Result<()> {
    req(PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

pub fn set_options(tid: i32, options: u64) -> io::Result<()> {
    req(libc::PTRACE_SETOPTIONS, tid, 0, options as usize).map(drop)
}

pub fn detach(tid: i32, sig: i32) -> io::Result<()> {
    req(libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

pub fn cont(tid: i32, sig: i32) -> io::Result<()> {
    req(libc::PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

pub fn singlestep(tid: i32) -> io::Result<()> {
    req(libc::PTRACE_SINGLESTEP, tid, 0, 0).map(drop)
}

pub fn event_msg(tid: i32) -> io::Result<u64> {
    let mut v: libc::c_ulong = 0;
    req(libc::PTRACE_GETEVENTMSG, tid, 0, &mut v as *mut _ as usize)?;
    Ok(v)
}

/// The stop reported by `wait_stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A ptrace stop: `sig` is the stop signal, `event` the PTRACE_EVENT_* (0 if none).
    Stopped { sig: i32, event: i32 },
    Exited(i32),
    Signaled(i32),
}

/// `waitpid(tid, __WALL)`, retrying on EINTR.
pub fn wait(tid: i32) -> io::Result<Stop> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(if libc::WIFSTOPPED(status) {
        Stop::Stopped { sig: libc::WSTOPSIG(status), event: (status >> 16) & 0xff }
    } else if libc::WIFEXITED(status) {
        Stop::Exited(libc::WEXITSTATUS(status))
    } else {
        Stop::Signaled(libc::WTERMSIG(status))
    })
}

/// `waitpid(-1, __WALL | WNOHANG)`: the tid of a child or tracee with news, if any.
pub fn wait_any_nohang() -> io::Result<Option<i32>> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer.
    let r = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
    match r {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        r => Ok(Some(r)),
    }
}

pub fn get_regs(tid: i32) -> io::Result<Regs> {
    // SAFETY: user_regs_struct is plain old data; all-zero is valid.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec { iov_base: (&mut regs as *mut Regs).cast(), iov_len: std::mem::size_of::<Regs>() };
    req(PTRACE_GETREGSET, tid, NT_PRSTATUS, &mut iov as *mut _ as usize)?;
    Ok(regs)
}

pub fn set_regs(tid: i32, regs: &Regs) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: (regs as *const Regs as *mut Regs).cast(), iov_len: std::mem::size_of::<Regs>() };
    req(PTRACE_SETREGSET, tid, NT_PRSTATUS, &mut iov as *mut _ as usize).map(drop)
}

/// The raw XSAVE area (`NT_X86_XSTATE`), trimmed to what the kernel filled.
pub fn get_xstate(tid: i32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 16384];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    req(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &mut iov as *mut _ as usize)?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

pub fn set_xstate(tid: i32, xs: &[u8]) -> io::Result<()> {
    let mut buf = xs.to_vec();
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    req(PTRACE_SETREGSET, tid, NT_X86_XSTATE, &mut iov as *mut _ as usize).map(drop)
}

pub fn get_sigmask(tid: i32) -> io::Result<u64> {
    let mut m: u64 = 0;
    req(PTRACE_GETSIGMASK, tid, 8, &mut m as *mut u64 as usize)?;
    Ok(m)
}

pub fn set_sigmask(tid: i32, m: u64) -> io::Result<()> {
    req(PTRACE_SETSIGMASK, tid, 8, &m as *const u64 as usize).map(drop)
}

/// Queued signals (raw 128-byte siginfo), without dequeuing them.
pub fn peek_siginfo(tid: i32, shared: bool) -> io::Result<Vec<Vec<u8>>> {
    #[repr(C)]
    struct Args {
        off: u64,
        flags: u32,
        nr: i32,
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 128 * 32];
    loop {
        let args = Args { off: out.len() as u64, flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 }, nr: 32 };
        let n = req(PTRACE_PEEKSIGINFO, tid, &args as *const Args as usize, buf.as_mut_ptr() as usize)? as usize;
        if n == 0 {
            return Ok(out);
        }
        out.extend(buf[..n * 128].chunks(128).map(|c| c.to_vec()));
    }
}

#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
pub struct RseqConfig {
    pub ptr: u64,
    pub size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

/// The seccomp filters of `tid`, oldest first (each a raw array of
/// 8-byte `struct sock_filter`).
pub fn get_seccomp_filters(tid: i32) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for index in 0..1024usize {
        // First ask for the length (in instructions), then the program.
        let n = match req(PTRACE_SECCOMP_GET_FILTER, tid, index, 0) {
            Ok(n) => n as usize,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; n * 8];
        req(PTRACE_SECCOMP_GET_FILTER, tid, index, buf.as_mut_ptr() as usize)?;
        out.push(buf);
    }
    // Index 0 is the most recently installed filter.
    out.reverse();
    Ok(out)
}

pub fn get_rseq(tid: i32) -> io::Result<RseqConfig> {
    let mut c = RseqConfig::default();
    req(PTRACE_GET_RSEQ_CONFIGURATION, tid, std::mem::size_of::<RseqConfig>(), &mut c as *mut _ as usize)?;
    Ok(c)
}

/// `user_regs_struct` as the 27 machine words stored in images.
pub fn regs_to_words(r: &Regs) -> Vec<u64> {
    vec![
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx, r.rsi, r.rdi,
        r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds, r.es, r.fs, r.gs,
    ]
}

pub fn words_to_regs(w: &[u64]) -> Option<Regs> {
    if w.len() != 27 {
        return None;
    }
    Some(Regs {
        r15: w[0], r14: w[1], r13: w[2], r12: w[3], rbp: w[4], rbx: w[5], r11: w[6], r10: w[7], r9: w[8],
        r8: w[9], rax: w[10], rcx: w[11], rdx: w[12], rsi: w[13], rdi: w[14], orig_rax: w[15], rip: w[16],
        cs: w[17], eflags: w[18], rsp: w[19], ss: w[20], fs_base: w[21], gs_base: w[22], ds: w[23], es: w[24],
        fs: w[25], gs: w[26],
    })
}
