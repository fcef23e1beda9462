//! Unit tests of the validator: each check refuses its hostile input with
//! its message, and a valid tree passes (fixtures in `fixtures.rs`).

use super::fixtures::*;
use super::*;
use crate::model::*;

#[test]
fn sample_is_valid() {
    validate(&sample_tree(), PAGES_LEN).unwrap();
}

#[test]
fn counts_and_ids() {
    expect(|t| t.tasks.clear(), "0 tasks");
    expect(
        |t| {
            t.tasks[1].threads = (0..4097)
                .map(|i| thread(if i == 0 { 2 } else { 100 + i }))
                .collect()
        },
        "task 2: 4097 threads",
    );
    expect(
        |t| {
            mm(t, 1).vmas = (0..65537)
                .map(|i| vma(0x1000 * (i + 1), 0x1000 * (i + 2), VmaKind::Anon, vec![]))
                .collect()
        },
        "task 2: 65537 vmas",
    );
    expect(
        |t| t.tasks[0].sigactions.pop().map(drop).unwrap_or(()),
        "task 1: 63 sigactions",
    );
    expect(
        |t| t.tasks[2].sigactions = vec![SigAction::default(); 3],
        "task 3: 3 sigactions",
    );
    expect(|t| t.tasks[1].pid = 0, "pid 0 out of range");
    expect(|t| t.tasks[1].pid = 4_194_305, "pid 4194305 out of range");
    expect(|t| t.tasks[1].pgid = -1, "task 2: pgid -1 out of range");
    expect(|t| t.tasks[1].sid = -3, "task 2: sid -3 out of range");
    expect(|t| t.tasks[2].pid = 2, "task 2: duplicate pid");
    expect(
        |t| t.tasks[1].threads.push(thread(5)),
        "task 2: duplicate tid 5",
    );
    expect(
        |t| t.tasks[1].threads.push(thread(3)),
        "task 3: duplicate pid",
    );
    expect(|t| t.host.page_size = 65536, "host page size 65536");
}

#[test]
fn tree_shape() {
    expect(|t| t.root = 7, "first task 1 is not the root 7");
    expect(|t| t.tasks.swap(0, 1), "first task 2 is not the root 1");
    expect(
        |t| t.tasks[2].ppid = 99,
        "task 3: parent 99 is not in the image",
    );
    expect(
        |t| t.tasks[1].ppid = 3,
        "task 2: listed before its parent 3",
    );
    expect(|t| t.tasks[1].ppid = 2, "task 2: is its own parent");
    expect(
        |t| {
            t.tasks[1].ppid = 3;
            t.tasks[2].ppid = 2
        },
        "listed before its parent",
    );
    expect(|t| t.tasks[0].pid = 8, "first task 8 is not the root 1");
    expect(
        |t| t.tasks[2].threads.push(thread(3)),
        "task 3: zombie with threads",
    );
    expect(
        |t| t.tasks[2].mm = Some(MmImage::default()),
        "task 3: zombie with threads, memory",
    );
    expect(|t| t.tasks[1].threads.clear(), "task 2: 0 threads");
    expect(
        |t| t.tasks[1].threads[0].tid = 6,
        "task 2: first thread is not the group leader",
    );
    expect(|t| t.tasks[1].mm = None, "task 2: live task without memory");
    expect(
        |t| t.tasks[1].state = TaskState::Stopped { signal: 99 },
        "task 2: stopped by bad signal 99",
    );
}

#[test]
fn threads() {
    expect(
        |t| t.tasks[0].threads[1].regs.pop().map(drop).unwrap_or(()),
        "task 1: thread 5: 26 registers",
    );
    expect(
        |t| t.tasks[0].threads[1].xsave = vec![0; 512],
        "task 1: thread 5: xsave area of 512 bytes",
    );
    expect(
        |t| t.tasks[0].threads[1].xsave = vec![0; 16385],
        "xsave area of 16385 bytes",
    );
    expect(
        |t| t.tasks[0].threads[1].rseq.as_mut().unwrap().len = 16,
        "task 1: thread 5: rseq area",
    );
    expect(
        |t| t.tasks[0].threads[1].pending = vec![vec![0; 12]],
        "pending siginfo of 12 bytes",
    );
    expect(
        |t| t.tasks[0].shared_pending = vec![vec![0; SIGINFO_SIZE]; MAX_PENDING + 1],
        "65537 pending signals",
    );
    expect(|t| t.tasks[0].comm = "a\0b".into(), "task 1: bad name");
}

#[test]
fn vmas() {
    expect(
        |t| {
            mm(t, 1)
                .vmas
                .push(vma(0x60_0000, 0x60_2000, VmaKind::Anon, vec![]))
        },
        "task 2: vma 0x600000-0x601000 overlaps 0x600000-0x602000",
    );
    expect(
        |t| mm(t, 0).vmas.swap(0, 1),
        "task 1: vma 0x600000-0x610000 overlaps 0x400000-0x404000",
    );
    expect(
        |t| mm(t, 1).vmas[0].start = 0x60_0010,
        "task 2: vma 0x600010-0x601000: unaligned or empty",
    );
    expect(|t| mm(t, 1).vmas[0].end = 0x60_0000, "unaligned or empty");
    expect(
        |t| mm(t, 1).vmas[0].pgoff = 12,
        "unaligned or empty (pgoff 0xc)",
    );
    expect(
        |t| {
            mm(t, 1).vmas.push(vma(
                0x7fff_ffff_f000,
                0x8000_0000_0000,
                VmaKind::Anon,
                vec![],
            ))
        },
        "beyond user space",
    );
    expect(
        |t| {
            mm(t, 1).vmas.push(vma(
                0xffff_ffff_ff60_0000,
                0xffff_ffff_ff60_1000,
                VmaKind::Anon,
                vec![],
            ))
        },
        "beyond user space",
    );
    expect(
        |t| {
            mm(t, 0).vmas.push(vma(
                0x7fff_f000_5000,
                0x7fff_f000_6000,
                VmaKind::Vdso,
                vec![],
            ))
        },
        "second Vdso mapping",
    );
    expect(
        |t| mm(t, 0).vmas[3].pages.push(run(0x7fff_f000_0000, 1, 0)),
        "Vvar mapping with dumped pages",
    );
    expect(|t| mm(t, 1).vmas[0].prot = 0x10, "bad prot 0x10");
    expect(
        |t| mm(t, 1).vmas[0].flags = libc::MAP_SHARED | libc::MAP_PRIVATE,
        "bad flags",
    );
    expect(|t| mm(t, 1).vmas[0].flags |= libc::MAP_FIXED, "bad flags");
    expect(
        |t| mm(t, 1).vmas[0].madvise = vec![libc::MADV_DONTNEED],
        "bad madvise hints",
    );
    expect(
        |t| {
            mm(t, 0).vmas[1].kind = VmaKind::File {
                path: "lib/x.so".into(),
            }
        },
        "task 1: vma 0x600000-0x610000: path \"lib/x.so\" is not absolute",
    );
    expect(
        |t| {
            mm(t, 0).vmas[1].kind = VmaKind::File {
                path: "/usr/../../etc/shadow".into(),
            }
        },
        "'..' component",
    );
    expect(
        |t| {
            mm(t, 0).vmas[1].kind = VmaKind::File {
                path: "/a\0b".into(),
            }
        },
        "contains NUL",
    );
    expect(
        |t| mm(t, 0).vmas[2].kind = VmaKind::Shmem { id: 4 },
        "refers to missing shmem 4",
    );
    expect(|t| mm(t, 1).start_brk = 0x1000, "inconsistent mm layout");
    expect(|t| mm(t, 1).auxv = vec![1], "auxv of 1 words");
    expect(
        |t| mm(t, 1).exe = "sh".into(),
        "task 2: exe: path \"sh\" is not absolute",
    );
}

#[test]
fn page_runs() {
    fn anon(t: &mut TreeImage) -> &mut Vec<PageRun> {
        &mut mm(t, 0).vmas[1].pages
    }
    expect(
        |t| anon(t)[0].addr = 0x5f_f000,
        "page run 0x5ff000-0x601000 outside 0x600000-0x610000",
    );
    expect(|t| anon(t)[1].npages = 16, "outside 0x600000-0x610000");
    expect(|t| anon(t)[0].addr = 0x60_0100, "unaligned or empty");
    expect(|t| anon(t)[0].npages = 0, "unaligned or empty");
    expect(|t| anon(t)[1].npages = u64::MAX / 2, "overflows");
    expect(
        |t| anon(t)[1].addr = 0x60_1000,
        "overlaps or is out of order",
    );
    expect(|t| anon(t).swap(0, 1), "overlaps or is out of order");
    expect(
        |t| anon(t)[0].data.len = 4096,
        "data of 4096 bytes for 2 pages",
    );
    expect(
        |t| anon(t)[0].data.off = 4095,
        "blob at 0xfff is not page aligned",
    );
    expect(|t| anon(t)[0].data.off = 0, "points into the header page");
    expect(
        |t| anon(t)[1].data.off = 16 * PAGE_SIZE + PAGE_SIZE,
        "blob 0x11000+0x1000 out of bounds (file ends at 0x11000)",
    );
    expect(|t| anon(t)[1].data.off = !0xfff, "overflows");
    expect(
        |t| mm(t, 0).vmas[2].pages.push(run(0x7000_0000_0000, 1, 0)),
        "private pages on a shared mapping",
    );
    expect(
        |t| t.shmem[0].pages[0].npages = 3,
        "shmem 0: page run 0x0-0x3000 outside 0x0-0x2000",
    );
    expect(
        |t| t.shmem[0].pages[0].data.off = 16 * PAGE_SIZE,
        "shmem 0: page run at 0x0: pages.img: blob 0x10000+0x2000 out of bounds",
    );
}

#[test]
fn fds_and_files() {
    expect(
        |t| t.tasks[1].fds.push(fd(7, 0)),
        "task 2: fd 7 out of range or duplicate",
    );
    expect(
        |t| t.tasks[1].fds.push(fd(1 << 20, 0)),
        "task 2: fd 1048576 out of range",
    );
    expect(
        |t| t.tasks[1].fds.push(fd(-1, 0)),
        "task 2: fd -1 out of range",
    );
    expect(
        |t| t.tasks[1].fds.push(fd(9, 99)),
        "task 2: fd 9 refers to missing file 99",
    );
    expect(
        |t| t.tasks[2].fds.push(fd(0, 0)),
        "task 3: zombie with threads, memory, fds or timers",
    );
    expect(|t| t.files[1].id = 0, "file 0: id out of order (listed at 1)");
    expect(|t| t.files[4].id = 9, "file 9: id out of order (listed at 4)");
    expect(
        |t| {
            t.files[4].kind = FileKind::Regular {
                path: "/etc/../..".into(),
                size: 1,
                mode: 0,
            }
        },
        "file 4: path \"/etc/../..\" has a '..' component",
    );
    expect(
        |t| {
            t.files[4].kind = FileKind::Regular {
                path: "/x".into(),
                size: u64::MAX,
                mode: 0,
            }
        },
        "file 4: bad size",
    );
    expect(
        |t| t.files[4].kind = FileKind::Directory { path: "".into() },
        "file 4: path \"\" is not absolute",
    );
    expect(|t| t.files[4].flags = 3, "file 4: bad flags");
    expect(
        |t| t.files[4].pos = -1,
        "file 4: bad flags 0o0 or position -1",
    );
    expect(
        |t| {
            t.files[2].kind = FileKind::Pipe {
                pipe: 77,
                capacity: 65535,
                data: None,
            }
        },
        "file 2: pipe capacity 65535 is not a power of two",
    );
    expect(
        |t| {
            t.files[2].kind = FileKind::Pipe {
                pipe: 77,
                capacity: 2 << 20,
                data: None,
            }
        },
        "pipe capacity 2097152",
    );
    expect(
        |t| {
            t.files[2].kind = FileKind::Pipe {
                pipe: 77,
                capacity: 4096,
                data: None,
            }
        },
        "differs from its other end's 65536",
    );
    expect(
        |t| {
            t.files[2].kind = FileKind::Pipe {
                pipe: 77,
                capacity: 65536,
                data: Some(blob(0, 1)),
            }
        },
        "file 2: pipe:[77] contents stored twice",
    );
    expect(
        |t| {
            t.files[1].kind = FileKind::Pipe {
                pipe: 77,
                capacity: 65536,
                data: Some(Blob {
                    off: 8192,
                    len: 1 << 17,
                    xxh3: 0,
                }),
            }
        },
        "exceed pipe capacity",
    );
    expect(
        |t| t.files[0].kind = FileKind::Inherited { key: String::new() },
        "file 0: inherited file without a key",
    );
    expect(
        |t| {
            t.files[0].kind = FileKind::Inherited {
                key: "pipe:\0".into(),
            }
        },
        "file 0: bad name",
    );
    expect(
        |t| t.files[3].kind = FileKind::Memfd { shmem: 1 },
        "file 3: memfd refers to missing shmem 1",
    );
    expect(
        |t| t.shmem[0].kind = ShmemKind::Anon,
        "file 3: memfd refers to shmem 0, which is not a memfd",
    );
    expect(
        |t| t.shmem.push(t.shmem[0].clone()),
        "shmem 0: id out of order (listed at 1)",
    );
    expect(
        |t| {
            t.shmem[0].kind = ShmemKind::Memfd {
                name: "x".repeat(250),
                seals: 0,
            }
        },
        "shmem 0: bad name",
    );
}

#[test]
fn task_misc() {
    expect(
        |t| {
            t.tasks[1].rlimits.push(Rlimit {
                resource: 16,
                cur: 0,
                max: 0,
            })
        },
        "task 2: rlimit 16",
    );
    expect(
        |t| {
            t.tasks[1].rlimits.push(Rlimit {
                resource: 7,
                cur: 0,
                max: 0,
            })
        },
        "task 2: rlimit 7 (0/0) invalid or duplicate",
    );
    expect(
        |t| t.tasks[1].rlimits[0].cur = 5000,
        "task 2: rlimit 7 (5000/4096)",
    );
    expect(|t| t.tasks[1].fs.cwd = "/../..".into(), "task 2: cwd: path");
    expect(
        |t| t.tasks[1].fs.root = "relative".into(),
        "task 2: root: path",
    );
    expect(|t| t.tasks[1].fs.umask = 0o1000, "umask");
    expect(|t| t.tasks[1].oom_score_adj = 1001, "oom_score_adj 1001");
    expect(|t| t.tasks[1].dumpable = 3, "dumpable 3");
}

#[test]
fn forged_values() {
    fn zombie(t: &mut TreeImage, status: i32) {
        t.tasks[2].state = TaskState::Zombie { status };
    }
    // Plausible exit statuses pass: exit codes, fatal signals, core dumps.
    for status in [0, 1 << 8, 255 << 8, libc::SIGKILL, libc::SIGSEGV | 0x80, 64] {
        let mut t = sample_tree();
        zombie(&mut t, status);
        validate(&t, PAGES_LEN).unwrap_or_else(|e| panic!("status {status:#x}: {e}"));
    }
    for status in [libc::SIGSTOP, libc::SIGCHLD, 0x7f, 65, 0x17f, -1, 1 << 16, (1 << 8) | 9] {
        expect(|t| zombie(t, status), "task 3: zombie with impossible exit status");
    }
    for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        let mut t = sample_tree();
        t.tasks[1].state = TaskState::Stopped { signal: sig };
        validate(&t, PAGES_LEN).unwrap();
    }
    expect(
        |t| t.tasks[1].state = TaskState::Stopped { signal: libc::SIGKILL },
        "task 2: stopped by bad signal 9",
    );
    expect(|t| t.tasks[0].ppid = 2, "task 1: the root's parent 2 is a task of the image (a cycle)");
    expect(|t| t.tasks[1].pgid = 77, "task 2: process group 77 is led by no task of the image");
    expect(|t| t.tasks[2].sid = 4, "task 3: session 4 is led by no task of the image");
    for flag in [libc::O_CREAT, libc::O_EXCL, libc::O_TRUNC] {
        expect(|t| t.files[4].flags |= flag, "file 4: bad flags");
    }
    expect(
        |t| {
            t.files[4].kind = FileKind::Unlinked {
                path: "/tmp/x".into(),
                mode: 0o104755,
                data: blob(0, 1),
            }
        },
        "file 4: deleted file with set-id mode 0o104755 (refused)",
    );
    let sysv = |shmid: i32, mode: u32| ShmemImage {
        id: 1,
        size: 4096,
        kind: ShmemKind::SysV { key: 1, shmid, mode, uid: 0, gid: 0 },
        pages: vec![],
    };
    let mut t = sample_tree();
    t.shmem.push(sysv(0, 0o600));
    validate(&t, PAGES_LEN).unwrap();
    expect(|t| t.shmem.push(sysv(-1, 0o600)), "shmem 1: SysV segment id -1");
    expect(|t| t.shmem.push(sysv(3, 0o4600)), "mode 0o4600");
    expect(
        |t| {
            let mut s = sysv(3, 0o600);
            s.size = 0;
            t.shmem.push(s)
        },
        "or size 0 invalid",
    );
    expect(
        |t| mm(t, 1).vmas.insert(0, vma(0, 0x1000, VmaKind::Anon, vec![])),
        "task 2: vma 0x0-0x1000: below 0x10000 (vm.mmap_min_addr)",
    );
}

#[test]
fn inventory_cross_check() {
    let t = sample_tree();
    let inv = Inventory::new(&t, 42, PAGES_LEN, Some("../parent".into()));
    check_inventory(&inv, &t, 42, PAGES_LEN).unwrap();
    assert!(check_inventory(&inv, &t, 43, PAGES_LEN)
        .unwrap_err()
        .to_string()
        .contains("tree.img checksum differs"));
    assert!(check_inventory(&inv, &t, 42, 0)
        .unwrap_err()
        .to_string()
        .contains("pages length"));
    let abs = Inventory {
        parent: Some("/abs".into()),
        ..inv.clone()
    };
    assert!(check_inventory(&abs, &t, 42, PAGES_LEN)
        .unwrap_err()
        .to_string()
        .contains("relative path"));
    let tasks = Inventory { tasks: 2, ..inv };
    assert!(matches!(
        check_inventory(&tasks, &t, 42, PAGES_LEN),
        Err(ImageError::InventoryMismatch(_))
    ));
}
