//! SysV semaphore sets and message queues of a tree that owns its IPC
//! namespace (a container). (SysV shared memory is in `crate::shmem`.)
//!
//! **Dump.** A thread joins the namespace, lists the objects in
//! `/proc/sysvipc/sem` and `/proc/sysvipc/msg`, reads every semaphore's
//! value (`GETALL`) and copies every queued message without taking it
//! (`msgrcv` with `MSG_COPY`). Key, id, owner, mode and a queue's byte limit
//! are kept; creators, times and the last pids are not. Undo adjustments of
//! `SEM_UNDO` operations belong to the processes and are not kept either:
//! the checkpoint cannot see them.
//!
//! **Restore.** Inside the new container's namespace, before its processes
//! run, each object is created with its id (`kernel/sem_next_id` and
//! `kernel/msg_next_id`, as for shared memory), then filled (`SETALL`,
//! `msgsnd` in order) and given its owner and mode.

use crate::error::{Context, Result};
use crate::model::{IpcPerm, Message, MsgQueue, SemSet};
use crate::sys::{self, ipc};

/// Key, id, mode, uid and gid, and the count column (`nsems`, or `qnum`
/// for queues) of each line of a `/proc/sysvipc` table.
fn table(text: &str, count_col: usize) -> Vec<(IpcPerm, usize)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sem: key semid perms nsems uid gid ...
            // msg: key msqid perms cbytes qnum lspid lrpid uid gid ...
            let (uid_col, gid_col) = if count_col == 3 { (4, 5) } else { (7, 8) };
            let perm = IpcPerm {
                key: f.first()?.parse().ok()?,
                id: f.get(1)?.parse().ok()?,
                mode: u32::from_str_radix(f.get(2)?, 8).ok()? & 0o777,
                uid: f.get(uid_col)?.parse().ok()?,
                gid: f.get(gid_col)?.parse().ok()?,
            };
            Some((perm, f.get(count_col)?.parse().ok()?))
        })
        .collect()
}

/// Every semaphore set and message queue of the IPC namespace of `pid`.
pub fn dump(pid: i32) -> Result<(Vec<SemSet>, Vec<MsgQueue>)> {
    sys::in_ipc_ns(pid, || {
        let mut sems = Vec::new();
        for (perm, nsems) in table(&std::fs::read_to_string("/proc/sysvipc/sem")?, 3) {
            sems.push(SemSet { perm, values: ipc::sem_values(perm.id, nsems)? });
        }
        let mut queues = Vec::new();
        for (perm, qnum) in table(&std::fs::read_to_string("/proc/sysvipc/msg")?, 4) {
            let mut messages = Vec::with_capacity(qnum);
            for i in 0..qnum {
                let (mtype, text) = ipc::msg_copy(perm.id, i)?;
                messages.push(Message { mtype, text });
            }
            queues.push(MsgQueue { perm, qbytes: ipc::msg_qbytes(perm.id)?, messages });
        }
        Ok((sems, queues))
    })
    .ctx(|| "read SysV semaphores and message queues".into())
}

/// Creates `sems` and `queues` with their ids inside the IPC namespace of
/// `init`.
pub fn restore(init: i32, sems: &[SemSet], queues: &[MsgQueue]) -> Result<()> {
    let (sems, queues) = (sems.to_vec(), queues.to_vec());
    sys::in_ipc_ns(init, move || {
        let came_back = |what: &str, id: i32, want: i32| {
            if id == want {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("SysV {what} came back as id {id}, not {want}")))
            }
        };
        for s in &sems {
            let p = s.perm;
            std::fs::write("/proc/sys/kernel/sem_next_id", p.id.to_string())?;
            came_back("semaphore set", ipc::sem_create(p.key, &s.values, p.uid, p.gid, p.mode)?, p.id)?;
        }
        for q in &queues {
            let p = q.perm;
            std::fs::write("/proc/sys/kernel/msg_next_id", p.id.to_string())?;
            let messages: Vec<(i64, Vec<u8>)> = q.messages.iter().map(|m| (m.mtype, m.text.clone())).collect();
            came_back("message queue", ipc::msg_create(p.key, q.qbytes, p.uid, p.gid, p.mode, &messages)?, p.id)?;
        }
        Ok(())
    })
    .ctx(|| "recreate SysV semaphores and message queues".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysvipc_tables() {
        let sem = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n\
                   1234 5 600 3 1000 100 0 0 0 1700000000\n";
        assert_eq!(table(sem, 3), vec![(IpcPerm { key: 1234, id: 5, mode: 0o600, uid: 1000, gid: 100 }, 3)]);
        let msg = "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime\n\
                   0 32768 1666 12 2 7 0 33 44 0 0 0 0 1700000000\n";
        assert_eq!(table(msg, 4), vec![(IpcPerm { key: 0, id: 32768, mode: 0o666, uid: 33, gid: 44 }, 2)]);
    }
}
