//! Validator tests for eventfd, signalfd, timerfd, epoll, socket and Unix
//! socket pair files: a valid set passes, and each forged value is refused
//! with its message.

use super::fixtures::{expect, fd, file, sample_tree, PAGES_LEN};
use super::*;
use crate::model::*;

/// The sample tree plus, in task 1: eventfd 5 (fd 5), signalfd 6 (fd 6),
/// timerfd 7 (fd 7), and epoll 8 (fd 8) watching fds 5 and 3.
fn with_events() -> TreeImage {
    let mut t = sample_tree();
    t.files.extend([
        file(5, FileKind::EventFd { count: 5, semaphore: true }),
        file(6, FileKind::SignalFd { mask: 0xa00 }),
        file(7, FileKind::TimerFd { clock: libc::CLOCK_REALTIME, value_ns: 1, interval_ns: 2, flags: 3, ticks: 4 }),
        file(
            8,
            FileKind::Epoll {
                owner: 1,
                watches: vec![
                    EpollWatch { fd: 5, file: 5, events: 0x19, data: 7 },
                    EpollWatch { fd: 3, file: 2, events: 0x8000_0001, data: 8 },
                ],
            },
        ),
    ]);
    t.tasks[0].fds.extend([fd(5, 5), fd(6, 6), fd(7, 7), fd(8, 8)]);
    t
}

fn expect_ev(f: impl FnOnce(&mut TreeImage), needle: &str) {
    expect(
        |t| {
            *t = with_events();
            f(t)
        },
        needle,
    )
}

fn watches(t: &mut TreeImage) -> &mut Vec<EpollWatch> {
    match &mut t.files.last_mut().unwrap().kind {
        FileKind::Epoll { watches, .. } => watches,
        _ => unreachable!(),
    }
}

#[test]
fn event_files() {
    validate(&with_events(), PAGES_LEN).unwrap();
    expect_ev(|t| t.files[5].kind = FileKind::EventFd { count: u64::MAX, semaphore: false }, "file 5: eventfd count 0xffffffffffffffff is over the maximum");
    expect_ev(|t| t.files[6].kind = FileKind::SignalFd { mask: 1 << 8 }, "file 6: signalfd mask 0x100 holds SIGKILL or SIGSTOP");
    expect_ev(
        |t| t.files[7].kind = FileKind::TimerFd { clock: libc::CLOCK_PROCESS_CPUTIME_ID, value_ns: 0, interval_ns: 0, flags: 0, ticks: 0 },
        "file 7: timerfd clock 2 or flags 0o0 invalid",
    );
    expect_ev(
        |t| t.files[7].kind = FileKind::TimerFd { clock: 1, value_ns: 0, interval_ns: 0, flags: 4, ticks: 0 },
        "file 7: timerfd clock 1 or flags 0o4 invalid",
    );
}

#[test]
fn epoll_watches() {
    expect_ev(|t| watches(t)[0].file = 6, "file 8: epoll watch of fd 5 (file 6) is not fd 5 of task 1");
    expect_ev(|t| watches(t)[1].fd = 9, "file 8: epoll watch of fd 9 (file 2) is not fd 9 of task 1");
    expect_ev(|t| watches(t)[1].file = 8, "epoll watch of fd 3 (file 8)");
    expect_ev(|t| watches(t).push(EpollWatch { fd: 5, file: 5, events: 1, data: 0 }), "or repeated");
    expect_ev(
        |t| {
            if let FileKind::Epoll { owner, .. } = &mut t.files.last_mut().unwrap().kind {
                *owner = 2;
            }
        },
        "file 8: epoll owner 2 does not hold it",
    );
    expect_ev(
        |t| {
            if let FileKind::Epoll { owner, .. } = &mut t.files.last_mut().unwrap().kind {
                *owner = 9;
            }
        },
        "file 8: epoll owner 9 is not a task of the image",
    );
}

fn with_socket(kind: FileKind) -> TreeImage {
    let mut t = sample_tree();
    t.files.push(file(5, kind));
    t.tasks[0].fds.push(fd(9, 5));
    t
}

fn sock(family: i32, stream: bool, local: Option<&str>, peer: Option<&str>, backlog: Option<i32>, options: SocketOptions) -> FileKind {
    FileKind::InetSocket { family, stream, local: local.map(Into::into), peer: peer.map(Into::into), backlog, options }
}

const V6: SocketOptions = SocketOptions { reuseaddr: true, reuseport: false, keepalive: false, broadcast: false, v6only: true, nodelay: true };

fn expect_sock(kind: FileKind, needle: &str) {
    expect(|t| *t = with_socket(kind), needle)
}

#[test]
fn inet_sockets() {
    let (tcp6, udp4) = (libc::AF_INET6, libc::AF_INET);
    validate(&with_socket(sock(tcp6, true, Some("[::1]:8080"), None, Some(128), V6)), PAGES_LEN).unwrap();
    let bcast = SocketOptions { broadcast: true, ..Default::default() };
    validate(&with_socket(sock(udp4, false, Some("127.0.0.1:53"), Some("10.0.0.1:53"), None, bcast)), PAGES_LEN).unwrap();
    let cases = [
        (sock(libc::AF_UNIX, true, None, None, None, V6), "file 5: socket family 1 is not AF_INET or AF_INET6"),
        (sock(tcp6, true, Some("127.0.0.1:80"), None, None, V6), "file 5: socket address \"127.0.0.1:80\" is not one of family 10"),
        (sock(tcp6, true, Some("nowhere"), None, None, V6), "socket address \"nowhere\""),
        (sock(tcp6, true, Some("[::1]:1"), None, Some(-1), V6), "file 5: backlog Some(-1) on a socket that cannot listen"),
        (sock(tcp6, true, None, None, Some(128), V6), "backlog Some(128) on a socket that cannot listen"),
        (sock(tcp6, false, Some("[::1]:1"), None, Some(1), Default::default()), "backlog Some(1) on a socket that cannot listen"),
        (sock(tcp6, true, Some("[::1]:1"), Some("[::1]:2"), None, V6), "file 5: socket options or peer that its kind does not have"),
        (sock(udp4, true, Some("1.2.3.4:5"), None, None, V6), "socket options or peer"),
        (sock(udp4, false, None, None, None, SocketOptions { nodelay: true, ..Default::default() }), "socket options or peer"),
    ];
    for (kind, needle) in cases {
        expect_sock(kind, needle);
    }
}

fn pair_end(id: u32, end: u8, ty: i32, data: Option<Blob>) -> FileImage {
    file(id, FileKind::UnixPair { ty, pair: 77, end, shutdown: 0, data, name: None })
}

/// The sample tree plus a stream pair (files 5, 6) in task 1, 5 bytes
/// queued on end 0.
fn with_pair(f: impl FnOnce(&mut Vec<FileImage>)) -> TreeImage {
    let mut t = sample_tree();
    let mut ends = vec![
        pair_end(5, 0, libc::SOCK_STREAM, Some(Blob { off: 6 * PAGE_SIZE, len: 5, xxh3: 0 })),
        pair_end(6, 1, libc::SOCK_STREAM, None),
    ];
    f(&mut ends);
    t.tasks[0].fds.extend(ends.iter().enumerate().map(|(i, e)| fd(10 + i as i32, e.id)));
    t.files.extend(ends);
    t
}

/// A change to the two ends, and the message it must give.
type PairCase = (fn(&mut Vec<FileImage>), &'static str);

#[test]
fn unix_pairs() {
    validate(&with_pair(|_| {}), PAGES_LEN).unwrap();
    let cases: [PairCase; 6] = [
        (|e| e.truncate(1), "unix socket pair 77 does not have exactly one of each end"),
        (|e| e[1] = pair_end(6, 0, libc::SOCK_STREAM, None), "unix socket pair 77 does not have exactly one of each end"),
        (|e| e[1] = pair_end(6, 1, libc::SOCK_DGRAM, None), "file 6: unix socket pair 77 has ends of two types"),
        (|e| e[1] = pair_end(6, 2, libc::SOCK_STREAM, None), "file 6: unix socket type 1, end 2 or shutdown 0 invalid"),
        (|e| e[0] = pair_end(5, 0, libc::SOCK_DGRAM, Some(Blob { off: 6 * PAGE_SIZE, len: 5, xxh3: 0 })), "file 5: 5 queued bytes on a unix socket of type 2"),
        (|e| e[0] = pair_end(5, 0, libc::SOCK_STREAM, Some(Blob { off: 60 * PAGE_SIZE, len: 5, xxh3: 0 })), "file 5: pages.img: blob"),
    ];
    for (f, needle) in cases {
        expect(|t| *t = with_pair(f), needle);
    }
}

#[test]
fn file_owners() {
    let owned = |pid: i32, signal: i32| {
        let mut t = sample_tree();
        t.files[4].owner = Some(FileOwner { pid, signal, thread: false }); // file 4: fd 7 of task 2
        t
    };
    validate(&owned(2, 34), PAGES_LEN).unwrap();
    expect(|t| *t = owned(1, 0), "file 4: owner 1 (signal 0) is not a task holding it");
    expect(|t| *t = owned(9, 0), "file 4: owner 9 (signal 0) is not a task holding it");
    expect(|t| *t = owned(2, 65), "file 4: owner 2 (signal 65) is not a task holding it");
}

#[test]
fn unix_listeners() {
    let listener = |ty: i32, name: &[u8], backlog: i32, sock: Option<SocketFile>| {
        let mut t = sample_tree();
        t.files.push(file(5, FileKind::UnixListener { ty, name: name.to_vec(), backlog, file: sock }));
        t.tasks[0].fds.push(fd(12, 5));
        t
    };
    let f = Some(SocketFile { mode: 0o660, uid: 0, gid: 0 });
    validate(&listener(libc::SOCK_STREAM, b"/run/app.sock", 5, f), PAGES_LEN).unwrap();
    validate(&listener(libc::SOCK_SEQPACKET, b"\0abstract", 5, None), PAGES_LEN).unwrap();
    let cases = [
        (listener(libc::SOCK_DGRAM, b"/run/app.sock", 5, f), "file 5: unix listener of type 2, name of 13 bytes or backlog 5 invalid"),
        (listener(libc::SOCK_STREAM, &[b'/'; 108], 5, f), "name of 108 bytes"),
        (listener(libc::SOCK_STREAM, b"/run/app.sock", -1, f), "backlog -1 invalid"),
        (listener(libc::SOCK_STREAM, b"\0abstract", 5, f), "file 5: unix listener's file mode does not match its name"),
        (listener(libc::SOCK_STREAM, b"/run/app.sock", 5, None), "file mode does not match"),
        (listener(libc::SOCK_STREAM, b"/run/app.sock", 5, Some(SocketFile { mode: 0o10000, uid: 0, gid: 0 })), "file mode does not match"),
        (listener(libc::SOCK_STREAM, b"/run/../etc/x", 5, f), "has a '..' component"),
        (listener(libc::SOCK_STREAM, b"run/app.sock", 5, f), "file 5: path \"run/app.sock\""),
    ];
    for (t, needle) in cases {
        expect(|x| *x = t, needle);
    }
}

#[test]
fn file_locks() {
    let lock = |kind: LockKind, write: bool, start: u64, end: Option<u64>| FileLock { kind, write, start, end };
    // Task 2's fd 7 is file 4, /etc/hosts; task 1's fd 3 is a pipe.
    let with = |fd: usize, task: usize, l: FileLock| {
        let mut t = sample_tree();
        t.tasks[task].fds[fd].locks.push(l);
        t
    };
    validate(&with(1, 1, lock(LockKind::Posix, true, 0, Some(99))), PAGES_LEN).unwrap();
    validate(&with(1, 1, lock(LockKind::Ofd, false, 10, None)), PAGES_LEN).unwrap();
    validate(&with(1, 1, lock(LockKind::Flock, true, 0, None)), PAGES_LEN).unwrap();
    let cases = [
        (with(1, 1, lock(LockKind::Flock, true, 5, None)), "task 2: fd 7: FLOCK WRITE 5-EOF lock"),
        (with(1, 1, lock(LockKind::Posix, true, 5, Some(4))), "fd 7: POSIX WRITE 5-4 lock"),
        (with(1, 1, lock(LockKind::Ofd, false, 1 << 63, None)), "invalid or on a file that cannot be locked"),
        (with(3, 0, lock(LockKind::Posix, true, 0, None)), "task 1: fd 3: POSIX WRITE 0-EOF lock"),
    ];
    for (t, needle) in cases {
        expect(|x| *x = t, needle);
    }
    let mut many = sample_tree();
    many.tasks[1].fds[1].locks = (0..=MAX_LOCKS as u64).map(|i| lock(LockKind::Posix, true, 2 * i, Some(2 * i))).collect();
    expect(|x| *x = many, "task 2: over 65536 file locks");
}

#[test]
fn posix_timers() {
    use crate::timers::{SIGEV_NONE, SIGEV_SIGNAL, SIGEV_THREAD_ID};
    // Task 1 has threads 1 and 5.
    let timer = |id: i32, notify: i32, signal: i32, tid: i32| PosixTimer { id, clock: 1, notify, signal, value: 7, tid, value_ns: 5, interval_ns: 0 };
    let with = |timers: Vec<PosixTimer>| {
        let mut t = sample_tree();
        t.tasks[0].posix_timers = timers;
        t
    };
    validate(&with(vec![timer(0, SIGEV_SIGNAL, 14, 0), timer(42, SIGEV_THREAD_ID, 34, 5), timer(3, SIGEV_NONE, 0, 0)]), PAGES_LEN).unwrap();
    let cases = [
        (with(vec![timer(0, SIGEV_SIGNAL, 14, 0), timer(0, SIGEV_NONE, 0, 0)]), "task 1: POSIX timer 0 (clock 1, notify 1, signal 0, thread 0) invalid or repeated"),
        (with(vec![timer(-1, SIGEV_SIGNAL, 14, 0)]), "POSIX timer -1"),
        (with(vec![timer(1, SIGEV_THREAD_ID, 34, 9)]), "POSIX timer 1 (clock 1, notify 4, signal 34, thread 9) invalid"),
        (with(vec![timer(1, SIGEV_SIGNAL, 0, 0)]), "signal 0, thread 0) invalid"),
        (with(vec![timer(1, SIGEV_SIGNAL, 65, 0)]), "signal 65"),
        (with(vec![timer(1, 2, 14, 0)]), "notify 2"),
        (with(vec![PosixTimer { clock: -6, ..timer(1, SIGEV_SIGNAL, 14, 0) }]), "clock -6"),
    ];
    for (t, needle) in cases {
        expect(|x| *x = t, needle);
    }
    let mut zombie = sample_tree();
    zombie.tasks[2].posix_timers = vec![timer(0, SIGEV_SIGNAL, 14, 0)];
    expect(|x| *x = zombie, "task 3: zombie with threads, memory, fds or timers");
}

#[test]
fn scheduling_and_registrations() {
    let mut t = sample_tree();
    t.tasks[0].threads[1].sched = Sched { policy: 1, priority: 50, flags: 1, timerslack_ns: 1, ..Default::default() };
    t.tasks[0].membarrier = 8 | 128;
    t.tasks[0].thp_disable = 3;
    validate(&t, PAGES_LEN).unwrap();
    expect(|t| t.tasks[0].threads[1].sched.nice = -21, "task 1: thread 5: scheduling Sched { policy: 0, flags: 0, nice: -21");
    expect(|t| t.tasks[1].threads[0].sched.priority = 3, "scheduling Sched { policy: 0, flags: 0, nice: 0, priority: 3");
    expect(|t| t.tasks[1].membarrier = 16, "task 2: membarrier registrations 0x10 unknown");
    expect(|t| t.tasks[1].thp_disable = 2, "task 2: THP disable mode 2 unknown");
    let mut t = sample_tree();
    t.tasks[0].threads[0].affinity = Some(vec![1, 3]);
    validate(&t, PAGES_LEN).unwrap();
    expect(|t| t.tasks[0].threads[0].affinity = Some(vec![]), "task 1: thread 1: CPU affinity Some([]) empty, unsorted or beyond CPU 1023");
    expect(|t| t.tasks[0].threads[0].affinity = Some(vec![3, 1]), "CPU affinity Some([3, 1]) empty, unsorted");
    expect(|t| t.tasks[0].threads[0].affinity = Some(vec![1024]), "beyond CPU 1023");
}

#[test]
fn vma_locks() {
    use super::fixtures::mm;
    let mut t = sample_tree();
    mm(&mut t, 0).vmas[1].mlock = MLOCK_ON_FAULT;
    mm(&mut t, 0).vmas[0].mlock = MLOCK_ALL;
    validate(&t, PAGES_LEN).unwrap();
    expect(|t| mm(t, 0).vmas[1].mlock = 3, "vma 0x600000-0x610000: bad mlock mode 3");
}

#[test]
fn sysv_semaphores_and_queues() {
    let perm = |id: i32| IpcPerm { key: 7, id, mode: 0o600, uid: 0, gid: 0 };
    let msg = |mtype: i64, n: usize| Message { mtype, text: vec![1; n] };
    let mut t = sample_tree();
    t.sem_sets = vec![SemSet { perm: perm(0), values: vec![0, 5, 32767] }];
    t.msg_queues = vec![MsgQueue { perm: perm(0), qbytes: 16384, messages: vec![msg(1, 10), msg(9, 0)] }];
    validate(&t, PAGES_LEN).unwrap();
    let sem = |f: fn(&mut SemSet), needle: &str| {
        let mut x = t.clone();
        f(&mut x.sem_sets[0]);
        expect(|y| *y = x, needle);
    };
    sem(|s| s.values[0] = 32768, "semaphore set 0 (mode 0o600, 3 semaphores) invalid");
    sem(|s| s.values.clear(), "0 semaphores) invalid");
    sem(|s| s.perm.mode = 0o1600, "mode 0o1600");
    let queue = |f: fn(&mut MsgQueue), needle: &str| {
        let mut x = t.clone();
        f(&mut x.msg_queues[0]);
        expect(|y| *y = x, needle);
    };
    queue(|q| q.messages[0].mtype = 0, "message queue 0 (mode 0o600, 2 messages, 10 of 16384 bytes) invalid");
    queue(|q| q.qbytes = 5, "10 of 5 bytes");
    queue(|q| q.perm.id = -1, "message queue -1");
    let mut x = t.clone();
    x.msg_queues.push(x.msg_queues[0].clone());
    expect(|y| *y = x, "message queue 0 (mode 0o600, 2 messages, 10 of 16384 bytes) invalid, repeated");
}

#[test]
fn tcp_connections() {
    let conn = |local: &str, peer: &str, state: TcpState| FileKind::TcpConnection {
        family: libc::AF_INET,
        local: local.into(),
        peer: peer.into(),
        options: SocketOptions::default(),
        state,
    };
    let ok = TcpState { mss: 65483, tcp_options: 7, snd_wscale: 7, rcv_wscale: 7, send: Some(Blob { off: 6 * PAGE_SIZE, len: 5, xxh3: 0 }), unsent: 2, ..Default::default() };
    validate(&with_socket(conn("127.0.0.1:5000", "127.0.0.1:41000", ok)), PAGES_LEN).unwrap();
    let cases = [
        (conn("127.0.0.1:5000", "[::1]:41000", ok), "file 5: TCP connection \"127.0.0.1:5000\" -> \"[::1]:41000\" of family 2 invalid"),
        (conn("127.0.0.1:5000", "127.0.0.1:5000", ok), "of family 2 invalid"),
        (conn("127.0.0.1:5000", "127.0.0.1:41000", TcpState { unsent: 6, ..ok }), "file 5: TCP connection state"),
        (conn("127.0.0.1:5000", "127.0.0.1:41000", TcpState { snd_wscale: 15, ..ok }), "TCP connection state"),
        (conn("127.0.0.1:5000", "127.0.0.1:41000", TcpState { mss: 0, ..ok }), "TCP connection state"),
        (conn("127.0.0.1:5000", "127.0.0.1:41000", TcpState { recv: Some(Blob { off: 60 * PAGE_SIZE, len: 5, xxh3: 0 }), ..ok }), "file 5: pages.img: blob"),
    ];
    for (kind, needle) in cases {
        expect_sock(kind, needle);
    }
}

#[test]
fn named_unix_connections() {
    let named = |ty: i32, name: &[u8]| {
        with_pair(|e| {
            for x in e.iter_mut() {
                if let FileKind::UnixPair { ty: t, data, name: n, .. } = &mut x.kind {
                    *t = ty;
                    *data = None;
                    *n = Some(name.to_vec());
                }
            }
        })
    };
    validate(&named(libc::SOCK_STREAM, b"/run/php-fpm.sock"), PAGES_LEN).unwrap();
    validate(&named(libc::SOCK_SEQPACKET, b"\0abstract"), PAGES_LEN).unwrap();
    expect(|t| *t = named(libc::SOCK_DGRAM, b"/dev/log"), "file 5: unix socket of type 2 named with 8 bytes");
    expect(|t| *t = named(libc::SOCK_STREAM, &[b'/'; 108]), "named with 108 bytes");
    expect(|t| *t = named(libc::SOCK_STREAM, b"run/x.sock"), "file 5: path \"run/x.sock\" is not absolute");
}
