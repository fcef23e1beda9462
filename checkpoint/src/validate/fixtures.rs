//! Fixtures for the validator's tests and the tests of other modules: a
//! small valid tree (`sample_tree`) and builders for its parts, plus
//! `expect`, which checks that one forged change is refused with its
//! message.

use super::*;
use crate::model::*;

pub(crate) const PAGES_LEN: u64 = 16 * PAGE_SIZE;

pub(crate) fn blob(page: u64, npages: u64) -> Blob {
    Blob {
        off: PAGE_SIZE * (1 + page),
        len: npages * PAGE_SIZE,
        xxh3: 0,
    }
}

pub(crate) fn run(addr: u64, npages: u64, page: u64) -> PageRun {
    PageRun {
        addr,
        npages,
        data: blob(page, npages),
        parent: 0,
    }
}

pub(crate) fn vma(start: u64, end: u64, kind: VmaKind, pages: Vec<PageRun>) -> Vma {
    let flags = if matches!(kind, VmaKind::Shmem { .. }) {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    Vma {
        start,
        end,
        prot: libc::PROT_READ | libc::PROT_WRITE,
        flags,
        pgoff: 0,
        kind,
        madvise: vec![],
        accounted: false,
        mlock: 0,
        pages,
    }
}

pub(crate) fn thread(tid: i32) -> ThreadImage {
    ThreadImage {
        tid,
        regs: vec![0; NREGS],
        xsave: vec![0; 1024],
        sigmask: 0,
        pending: vec![],
        rseq: Some(Rseq {
            ptr: 0x7000_0000_0020,
            len: 32,
            sig: 0x53053053,
            flags: 0,
            cs: 0,
        }),
        sigaltstack: SigAltStack::default(),
        clear_child_tid: 0,
        robust_list: 0,
        robust_list_len: 24,
        comm: "t".into(),
        seccomp: Vec::new(),
        sched: Default::default(),
        affinity: None,
    }
}

pub(crate) fn task(
    pid: i32,
    ppid: i32,
    tids: &[i32],
    vmas: Vec<Vma>,
    fds: Vec<FdImage>,
) -> TaskImage {
    TaskImage {
        pid,
        ppid,
        pgid: 1,
        sid: 1,
        state: TaskState::Running,
        comm: format!("proc{pid}"),
        threads: tids.iter().map(|&t| thread(t)).collect(),
        mm: Some(MmImage {
            vmas,
            exe: "/bin/sh".into(),
            ..Default::default()
        }),
        fds,
        sigactions: vec![SigAction::default(); NSIG],
        shared_pending: vec![vec![0; SIGINFO_SIZE]],
        creds: Creds::default(),
        fs: FsInfo {
            cwd: "/".into(),
            root: "/".into(),
            umask: 0o022,
        },
        rlimits: vec![Rlimit {
            resource: 7,
            cur: 1024,
            max: 4096,
        }],
        itimers: [Itimer::default(); 3],
        posix_timers: vec![],
        personality: 0,
        pdeath_signal: 0,
        child_subreaper: false,
        dumpable: 1,
        thp_disable: 0,
        membarrier: 0,
        no_new_privs: false,
        oom_score_adj: 0,
    }
}

pub(crate) fn fd(fd: i32, file: u32) -> FdImage {
    FdImage {
        fd,
        file,
        cloexec: fd > 2,
        locks: vec![],
    }
}

pub(crate) fn file(id: u32, kind: FileKind) -> FileImage {
    FileImage {
        id,
        flags: libc::O_RDONLY,
        pos: 0,
        kind,
        owner: None,
    }
}

/// A valid tree: 1 (2 threads) -> {2, zombie 3}, pipes, a memfd, a regular file.
pub(crate) fn sample_tree() -> TreeImage {
    let vmas1 = vec![
        vma(
            0x40_0000,
            0x40_4000,
            VmaKind::File {
                path: "/bin/sh".into(),
            },
            vec![run(0x40_1000, 1, 0)],
        ),
        vma(
            0x60_0000,
            0x61_0000,
            VmaKind::Anon,
            vec![run(0x60_0000, 2, 1), run(0x60_4000, 1, 3)],
        ),
        vma(
            0x7000_0000_0000,
            0x7000_0000_1000,
            VmaKind::Shmem { id: 0 },
            vec![],
        ),
        vma(0x7fff_f000_0000, 0x7fff_f000_2000, VmaKind::Vvar, vec![]),
        vma(0x7fff_f000_2000, 0x7fff_f000_4000, VmaKind::Vdso, vec![]),
    ];
    let vmas2 = vec![vma(
        0x60_0000,
        0x60_1000,
        VmaKind::Anon,
        vec![run(0x60_0000, 1, 4)],
    )];
    let mut zombie = task(3, 1, &[], vec![], vec![]);
    zombie.state = TaskState::Zombie { status: 0 };
    zombie.mm = None;
    zombie.sigactions.clear();
    TreeImage {
        root: 1,
        tasks: vec![
            task(
                1,
                0,
                &[1, 5],
                vmas1,
                vec![fd(0, 0), fd(1, 1), fd(2, 1), fd(3, 2), fd(4, 3)],
            ),
            task(2, 1, &[2], vmas2, vec![fd(0, 0), fd(7, 4)]),
            zombie,
        ],
        files: vec![
            file(
                0,
                FileKind::CharDevice {
                    path: "/dev/null".into(),
                    rdev: 0x103,
                },
            ),
            file(
                1,
                FileKind::Pipe {
                    pipe: 77,
                    capacity: 65536,
                    data: Some(Blob {
                        off: 6 * PAGE_SIZE,
                        len: 5,
                        xxh3: 0,
                    }),
                },
            ),
            file(
                2,
                FileKind::Pipe {
                    pipe: 77,
                    capacity: 65536,
                    data: None,
                },
            ),
            file(3, FileKind::Memfd { shmem: 0 }),
            file(
                4,
                FileKind::Regular {
                    path: "/etc/hosts".into(),
                    size: 100,
                    mode: 0o100644,
                },
            ),
        ],
        shmem: vec![ShmemImage {
            id: 0,
            size: 5000,
            kind: ShmemKind::Memfd {
                name: "jit".into(),
                seals: 0,
            },
            pages: vec![run(0, 2, 7)],
        }],
        sem_sets: vec![],
        msg_queues: vec![],
        vdso_xxh3: Some(1),
        host: HostInfo {
            kernel: "6.18".into(),
            xcr0: 7,
            page_size: PAGE_SIZE,
        },
    }
}

pub(crate) fn expect(f: impl FnOnce(&mut TreeImage), needle: &str) {
    let mut t = sample_tree();
    f(&mut t);
    match validate(&t, PAGES_LEN) {
        Ok(()) => panic!("accepted, expected error containing {needle:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(matches!(e, ImageError::Invalid(_)), "{msg}");
            assert!(
                msg.contains(needle),
                "error {msg:?} does not contain {needle:?}"
            );
        }
    }
}

pub(crate) fn mm(t: &mut TreeImage, i: usize) -> &mut MmImage {
    t.tasks[i].mm.as_mut().unwrap()
}
