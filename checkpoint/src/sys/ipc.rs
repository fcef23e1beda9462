//! SysV semaphore sets and message queues, in the calling thread's IPC
//! namespace (see [`super::in_ipc_ns`]).

use std::io;

/// `msgrcv` flag: copy message number `msgtyp` of the queue, leaving it
/// queued (needs CONFIG_CHECKPOINT_RESTORE).
const MSG_COPY: i32 = 0o40000;
/// The largest message the kernel allows (`msgmax` is at most this).
pub const MSG_MAX: usize = 1 << 20;

fn ok(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The values of the `nsems` semaphores of set `semid`.
pub fn sem_values(semid: i32, nsems: usize) -> io::Result<Vec<u16>> {
    let mut v = vec![0u16; nsems];
    // SAFETY: GETALL writes `nsems` unsigned shorts into `v`.
    ok(unsafe { libc::semctl(semid, 0, libc::GETALL, v.as_mut_ptr()) })?;
    Ok(v)
}

/// Creates semaphore set `key` (`IPC_EXCL`) with `values`, owner and mode.
pub fn sem_create(key: i32, values: &[u16], uid: u32, gid: u32, mode: u32) -> io::Result<i32> {
    // SAFETY: plain syscalls on integers; SETALL reads `values.len()`
    // shorts, which is the set's size; IPC_STAT fills and IPC_SET reads `ds`.
    unsafe {
        let id = ok(libc::semget(key, values.len() as i32, (mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL))?;
        ok(libc::semctl(id, 0, libc::SETALL, values.as_ptr()))?;
        let mut ds: libc::semid_ds = std::mem::zeroed();
        ok(libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds))?;
        ds.sem_perm.uid = uid;
        ds.sem_perm.gid = gid;
        ds.sem_perm.mode = (mode & 0o777) as _;
        ok(libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds))?;
        Ok(id)
    }
}

/// The queue's byte limit (`msg_qbytes`).
pub fn msg_qbytes(msqid: i32) -> io::Result<u64> {
    // SAFETY: IPC_STAT fills `ds`, plain old data.
    unsafe {
        let mut ds: libc::msqid_ds = std::mem::zeroed();
        ok(libc::msgctl(msqid, libc::IPC_STAT, &mut ds))?;
        Ok(ds.msg_qbytes as u64)
    }
}

/// Message number `index` of queue `msqid` (type, text), left queued.
pub fn msg_copy(msqid: i32, index: usize) -> io::Result<(i64, Vec<u8>)> {
    let mut buf = vec![0u8; 8 + MSG_MAX];
    // SAFETY: msgrcv writes a long and at most MSG_MAX bytes into `buf`.
    let n = unsafe {
        libc::msgrcv(msqid, buf.as_mut_ptr().cast(), MSG_MAX, index as libc::c_long, libc::IPC_NOWAIT | MSG_COPY)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mtype = i64::from_le_bytes(buf[..8].try_into().unwrap_or([0; 8]));
    buf.truncate(8 + n as usize);
    buf.drain(..8);
    Ok((mtype, buf))
}

/// Creates queue `key` (`IPC_EXCL`) with its byte limit, owner and mode,
/// and queues `messages` in order.
pub fn msg_create(key: i32, qbytes: u64, uid: u32, gid: u32, mode: u32, messages: &[(i64, Vec<u8>)]) -> io::Result<i32> {
    // SAFETY: plain syscalls; IPC_STAT fills and IPC_SET reads `ds`;
    // msgsnd reads a long and `text.len()` bytes from `m`.
    unsafe {
        let id = ok(libc::msgget(key, (mode & 0o777) as i32 | libc::IPC_CREAT | libc::IPC_EXCL))?;
        let mut ds: libc::msqid_ds = std::mem::zeroed();
        ok(libc::msgctl(id, libc::IPC_STAT, &mut ds))?;
        ds.msg_qbytes = qbytes as _;
        ok(libc::msgctl(id, libc::IPC_SET, &mut ds))?;
        for (mtype, text) in messages {
            let mut m = mtype.to_le_bytes().to_vec();
            m.extend_from_slice(text);
            ok(libc::msgsnd(id, m.as_ptr().cast(), text.len(), libc::IPC_NOWAIT))?;
        }
        ok(libc::msgctl(id, libc::IPC_STAT, &mut ds))?;
        ds.msg_perm.uid = uid;
        ds.msg_perm.gid = gid;
        ds.msg_perm.mode = (mode & 0o777) as _;
        ok(libc::msgctl(id, libc::IPC_SET, &mut ds))?;
        Ok(id)
    }
}
