//! Human-readable description of an image (what `stasis inspect DIR` prints).
//!
//! Works on any decoded tree, validated or not: it never indexes by image
//! data and walks the process tree without recursion, so a hostile image
//! can at worst produce an odd report.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use serde_json::json;

use crate::image::{Inventory, PAGE_SIZE};
use crate::model::{
    FileImage, FileKind, PageRun, ShmemKind, TaskImage, TaskState, TreeImage, Vma, VmaKind,
};

/// Bytes as a short human size ("12.0 KiB").
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS.get(u).unwrap_or(&"?"))
    }
}

/// Unix seconds as "YYYY-MM-DD HH:MM:SS UTC" (proleptic Gregorian calendar).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Days since 1970-01-01 to civil date, shifted to a March-based era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn state_name(s: &TaskState) -> String {
    match s {
        TaskState::Running => "running".into(),
        TaskState::Stopped { signal } => format!("stopped({signal})"),
        TaskState::Zombie { status } => format!("zombie({status:#x})"),
    }
}

fn prot_str(v: &Vma) -> String {
    let b = |bit: i32, c: char| if v.prot & bit != 0 { c } else { '-' };
    let s = if v.flags & libc::MAP_SHARED != 0 {
        's'
    } else {
        'p'
    };
    [
        b(libc::PROT_READ, 'r'),
        b(libc::PROT_WRITE, 'w'),
        b(libc::PROT_EXEC, 'x'),
        s,
    ]
    .iter()
    .collect()
}

fn vma_kind(k: &VmaKind) -> String {
    match k {
        VmaKind::Anon => "anon".into(),
        VmaKind::File { path } => format!("file {path}"),
        VmaKind::Shmem { id } => format!("shmem {id}"),
        VmaKind::Vvar => "[vvar]".into(),
        VmaKind::VvarVclock => "[vvar_vclock]".into(),
        VmaKind::Vdso => "[vdso]".into(),
    }
}

fn npages(runs: &[PageRun]) -> u64 {
    runs.iter().fold(0u64, |a, r| a.saturating_add(r.npages))
}

fn access(flags: i32) -> &'static str {
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_ACCMODE?",
    }
}

fn file_target(f: &FileImage) -> String {
    match &f.kind {
        FileKind::Regular { path, size, mode } => format!("{path} (size {size}, mode {mode:o})"),
        FileKind::Unlinked { path, data, .. } => {
            format!("{path} (deleted, {} in image)", human_size(data.len))
        }
        FileKind::Directory { path } => format!("{path} (dir)"),
        FileKind::CharDevice { path, rdev } => {
            format!("{path} (chr {}:{})", rdev >> 8 & 0xfff, rdev & 0xff)
        }
        FileKind::Pipe { pipe, data, .. } => format!("pipe:[{pipe}]{}", queued(data)),
        FileKind::Fifo {
            path, pipe, data, ..
        } => format!("{path} (fifo pipe:[{pipe}]){}", queued(data)),
        FileKind::Memfd { shmem } => format!("memfd shmem {shmem}"),
        FileKind::Inherited { key } => format!("inherited {key}"),
        k => crate::events::describe(k).or_else(|| crate::sockets::describe(k)).or_else(|| crate::unix::describe(k)).or_else(|| crate::tcp::describe(k)).unwrap_or_default(),
    }
}

fn queued(data: &Option<crate::model::Blob>) -> String {
    data.map(|d| format!(" {} queued", d.len))
        .unwrap_or_default()
}

/// Tasks in tree order with their depth: roots (tasks whose parent is not
/// in the image) first, each followed by its descendants. Tasks never
/// reached (parent cycles, duplicate pids) come last at depth 0.
fn tree_order(tree: &TreeImage) -> Vec<(usize, &TaskImage)> {
    let pids: HashSet<i32> = tree.tasks.iter().map(|t| t.pid).collect();
    let mut children: HashMap<i32, Vec<&TaskImage>> = HashMap::new();
    let mut roots = Vec::new();
    for t in &tree.tasks {
        if pids.contains(&t.ppid) && t.ppid != t.pid {
            children.entry(t.ppid).or_default().push(t);
        } else {
            roots.push(t);
        }
    }
    let mut out = Vec::with_capacity(tree.tasks.len());
    let mut seen: HashSet<*const TaskImage> = HashSet::new();
    let mut descended: HashSet<i32> = HashSet::new();
    let mut stack: Vec<(usize, &TaskImage)> = roots.into_iter().rev().map(|t| (0, t)).collect();
    while let Some((depth, t)) = stack.pop() {
        if !seen.insert(t as *const _) {
            continue;
        }
        out.push((depth, t));
        if let Some(kids) = children.get(&t.pid) {
            // Only descend once per pid, even with duplicate pids.
            if descended.insert(t.pid) {
                stack.extend(kids.iter().rev().map(|k| (depth + 1, *k)));
            }
        }
    }
    for t in &tree.tasks {
        if seen.insert(t as *const _) {
            out.push((0, t));
        }
    }
    out
}

/// A readable report of an image, like CRIU's `crit show`.
pub fn describe(tree: &TreeImage, inv: &Inventory) -> String {
    let mut o = String::new();
    let total_pages: u64 = tree
        .tasks
        .iter()
        .filter_map(|t| t.mm.as_ref())
        .flat_map(|mm| mm.vmas.iter())
        .fold(0u64, |a, v| a.saturating_add(npages(&v.pages)));
    let _ = writeln!(o, "stasis checkpoint image");
    let _ = writeln!(o, "  format version: {}", inv.format_version);
    let _ = writeln!(o, "  written by:     {}", inv.tool_version);
    let _ = writeln!(
        o,
        "  created:        {} (unix {})",
        format_utc(inv.created),
        inv.created
    );
    let _ = writeln!(o, "  root pid:       {}", tree.root);
    let _ = writeln!(o, "  tasks:          {}", tree.tasks.len());
    let _ = writeln!(
        o,
        "  pages.img:      {} of data ({} private pages dumped)",
        human_size(inv.pages_len),
        total_pages
    );
    let _ = writeln!(
        o,
        "  parent image:   {}",
        inv.parent.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        o,
        "  files: {}, shared memory objects: {}",
        tree.files.len(),
        tree.shmem.len()
    );
    let _ = writeln!(
        o,
        "  host: kernel {}, page size {}, xcr0 {:#x}, vdso xxh3 {}",
        tree.host.kernel,
        tree.host.page_size,
        tree.host.xcr0,
        tree.vdso_xxh3
            .map_or("none".into(), |v| format!("{v:#018x}"))
    );

    let _ = writeln!(o, "\nprocess tree:");
    let _ = writeln!(
        o,
        "  {:<16} {:>7} {:>7} {:>7} {:<14} {:>7}  COMM",
        "PID", "PPID", "PGID", "SID", "STATE", "THREADS"
    );
    for (depth, t) in tree_order(tree) {
        let pid = format!("{}{}", "  ".repeat(depth.min(32)), t.pid);
        let _ = writeln!(
            o,
            "  {pid:<16} {:>7} {:>7} {:>7} {:<14} {:>7}  {}",
            t.ppid,
            t.pgid,
            t.sid,
            state_name(&t.state),
            t.threads.len(),
            t.comm
        );
    }

    let files: HashMap<u32, &FileImage> = tree.files.iter().map(|f| (f.id, f)).collect();
    for t in &tree.tasks {
        let _ = writeln!(o, "\ntask {} ({}): {}", t.pid, t.comm, state_name(&t.state));
        if !t.threads.is_empty() {
            let tids: Vec<String> = t.threads.iter().map(|th| th.tid.to_string()).collect();
            let _ = writeln!(o, "  threads: {}", tids.join(" "));
        }
        if let Some(mm) = &t.mm {
            let dumped = mm
                .vmas
                .iter()
                .fold(0u64, |a, v| a.saturating_add(npages(&v.pages)));
            let _ = writeln!(
                o,
                "  mappings ({}, {} pages dumped):",
                mm.vmas.len(),
                dumped
            );
            for v in &mm.vmas {
                let n = npages(&v.pages);
                let _ = writeln!(
                    o,
                    "    {:012x}-{:012x} {} {:<32} pgoff {:#x}  {} pages / {}",
                    v.start,
                    v.end,
                    prot_str(v),
                    vma_kind(&v.kind),
                    v.pgoff,
                    n,
                    human_size(n.saturating_mul(PAGE_SIZE))
                );
            }
            if !mm.exe.is_empty() {
                let _ = writeln!(o, "  exe: {}", mm.exe);
            }
        }
        for p in &t.posix_timers {
            let how = match p.notify {
                crate::timers::SIGEV_NONE => "no signal".to_string(),
                crate::timers::SIGEV_THREAD_ID => format!("signal {} to thread {}", p.signal, p.tid),
                _ => format!("signal {}", p.signal),
            };
            let _ = writeln!(
                o,
                "  POSIX timer {}: clock {}, {how}, next in {} ns, period {} ns",
                p.id, p.clock, p.value_ns, p.interval_ns
            );
        }
        let _ = writeln!(o, "  fds ({}):", t.fds.len());
        for fd in &t.fds {
            let cloexec = if fd.cloexec { " cloexec" } else { "" };
            match files.get(&fd.file) {
                Some(f) => {
                    let owner = f.owner.map(|w| format!(" owner {} signal {}", w.pid, w.signal)).unwrap_or_default();
                    let locks: String = fd.locks.iter().map(|l| format!(" lock {}", crate::locks::describe(l))).collect();
                    let _ = writeln!(
                        o,
                        "    {:>4} -> {} {} flags {:#o} pos {}{cloexec}{owner}{locks}",
                        fd.fd,
                        file_target(f),
                        access(f.flags),
                        f.flags,
                        f.pos
                    );
                }
                None => {
                    let _ = writeln!(o, "    {:>4} -> missing file {}{cloexec}", fd.fd, fd.file);
                }
            }
        }
        let _ = writeln!(
            o,
            "  cwd {}  root {}  umask {:03o}",
            t.fs.cwd, t.fs.root, t.fs.umask
        );
    }

    let _ = writeln!(o, "\nshared memory objects ({}):", tree.shmem.len());
    for s in &tree.shmem {
        let kind = match &s.kind {
            ShmemKind::Anon => "anonymous shared".to_string(),
            ShmemKind::Memfd { name, seals } => format!("memfd {name:?} seals {seals:#x}"),
            ShmemKind::SysV {
                key, shmid, mode, ..
            } => format!("sysv key {key:#x} shmid {shmid} mode {mode:o}"),
        };
        let n = npages(&s.pages);
        let _ = writeln!(
            o,
            "  shmem {}: {kind}, size {}, {n} pages / {} populated",
            s.id,
            human_size(s.size),
            human_size(n.saturating_mul(PAGE_SIZE))
        );
    }
    for s in &tree.sem_sets {
        let p = s.perm;
        let _ = writeln!(o, "  sysv semaphore set {} (key {:#x}, mode {:o}): values {:?}", p.id, p.key, p.mode, s.values);
    }
    for q in &tree.msg_queues {
        let p = q.perm;
        let bytes: usize = q.messages.iter().map(|m| m.text.len()).sum();
        let _ = writeln!(
            o,
            "  sysv message queue {} (key {:#x}, mode {:o}): {} messages, {bytes} of {} bytes",
            p.id,
            p.key,
            p.mode,
            q.messages.len(),
            q.qbytes
        );
    }
    o
}

/// A machine-readable summary of an image.
pub fn describe_json(tree: &TreeImage, inv: &Inventory) -> serde_json::Value {
    let tasks: Vec<serde_json::Value> = tree_order(tree)
        .into_iter()
        .map(|(depth, t)| {
            let (vmas, pages) = t.mm.as_ref().map_or((0, 0u64), |mm| {
                (
                    mm.vmas.len(),
                    mm.vmas
                        .iter()
                        .fold(0u64, |a, v| a.saturating_add(npages(&v.pages))),
                )
            });
            json!({
                "pid": t.pid, "ppid": t.ppid, "pgid": t.pgid, "sid": t.sid, "depth": depth,
                "state": state_name(&t.state), "comm": t.comm, "threads": t.threads.len(),
                "vmas": vmas, "pages": pages,
                "fds": t.fds.iter().map(|f| f.fd).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "format_version": inv.format_version,
        "tool_version": inv.tool_version,
        "created": inv.created,
        "root": tree.root,
        "pages_len": inv.pages_len,
        "parent": inv.parent,
        "tasks": tasks,
        "files": tree.files.len(),
        "shmem": tree.shmem.iter().map(|s| json!({"id": s.id, "size": s.size, "pages": npages(&s.pages)})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::fixtures::{sample_tree, task};

    fn inv() -> Inventory {
        Inventory {
            format_version: 1,
            tool_version: "stasis 0.1.0".into(),
            created: 1_700_000_000,
            root_pid: 1,
            tasks: 3,
            pages_len: 16 * PAGE_SIZE,
            parent: None,
            tree_xxh3: 0,
            pre_dump: false,
        }
    }

    #[test]
    fn dates_and_sizes() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert!(format_utc(u64::MAX).contains("UTC"));
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(65536), "64.0 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn report() {
        let r = describe(&sample_tree(), &inv());
        for needle in [
            "format version: 1",
            "created:        2023-11-14 22:13:20 UTC",
            "tasks:          3",
            "pages.img:      64.0 KiB of data (5 private pages dumped)",
            "  1                      0       1       1 running              2  proc1",
            "    2                    1       1       1 running              1  proc2",
            "    3                    1       1       1 zombie(0x0)          0  proc3",
            "000000600000-000000610000 rw-p anon",
            "pgoff 0x0  3 pages / 12.0 KiB",
            "file /bin/sh",
            "shmem 0",
            "[vdso]",
            "   1 -> pipe:[77] 5 queued O_RDONLY flags 0o0 pos 0",
            "   3 -> pipe:[77] O_RDONLY flags 0o0 pos 0 cloexec",
            "   7 -> /etc/hosts (size 100, mode 100644)",
            "   0 -> /dev/null (chr 1:3)",
            "shmem 0: memfd \"jit\" seals 0x0, size 4.9 KiB, 2 pages / 8.0 KiB populated",
        ] {
            assert!(r.contains(needle), "report lacks {needle:?}:\n{r}");
        }
    }

    #[test]
    fn summary_json() {
        let v = describe_json(&sample_tree(), &inv());
        assert_eq!(v["root"], 1);
        assert_eq!(v["tasks"].as_array().map(Vec::len), Some(3));
        assert_eq!(v["tasks"][0]["threads"], 2);
        assert_eq!(v["tasks"][0]["pages"], 4);
        assert_eq!(v["tasks"][1]["depth"], 1);
        assert_eq!(v["tasks"][2]["state"], "zombie(0x0)");
        assert_eq!(v["tasks"][0]["fds"], serde_json::json!([0, 1, 2, 3, 4]));
        assert_eq!(v["shmem"][0]["pages"], 2);
        assert_eq!(v["files"], 5);
    }

    #[test]
    fn hostile_trees_do_not_hang_or_panic() {
        // A parent cycle, a duplicate pid and a fd to a missing file.
        let mut t = sample_tree();
        t.tasks.push(task(10, 11, &[10], vec![], vec![]));
        t.tasks.push(task(11, 10, &[11], vec![], vec![]));
        t.tasks.push(task(
            2,
            2,
            &[2],
            vec![],
            vec![crate::model::FdImage {
                fd: 9,
                file: 999,
                cloexec: false,
                locks: vec![],
            }],
        ));
        let r = describe(&t, &inv());
        assert!(r.contains("missing file 999"));
        assert_eq!(
            describe_json(&t, &inv())["tasks"].as_array().map(Vec::len),
            Some(6)
        );
        let r = describe(&TreeImage::default(), &Inventory::default());
        assert!(r.contains("tasks:          0"));
    }
}
