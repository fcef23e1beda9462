/*
 * event_fds (cf. zdtm eventfs00, signalfd00, timerfd, epoll00/01): the
 * descriptors of event loops.
 *
 * State built before the checkpoint:
 *  - e1: eventfd, EFD_SEMAPHORE | EFD_NONBLOCK, count 5;
 *  - e2: eventfd, EFD_NONBLOCK, count 0x123456789 (over 32 bits);
 *  - sfd: signalfd for {SIGUSR1, SIGUSR2}, SFD_NONBLOCK; SIGUSR1 blocked
 *    and pending;
 *  - t1: timerfd CLOCK_MONOTONIC, one-shot, 1 hour;
 *  - t2: timerfd CLOCK_MONOTONIC, every 20 ms, expired and not read (the
 *    kernel then shows no time left and one expiration);
 *  - t3: timerfd CLOCK_REALTIME, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET,
 *    1 hour from now;
 *  - t4: timerfd CLOCK_MONOTONIC, disarmed, 7 unread expirations
 *    (TFD_IOC_SET_TICKS);
 *  - a pipe with 3 bytes queued;
 *  - ep: epoll watching e1 (EPOLLIN | EPOLLET, data 0x1234), the pipe's read
 *    end (EPOLLIN, data 0xdead) and e2 (EPOLLIN | EPOLLONESHOT, data
 *    0xbeef); one epoll_wait before the checkpoint reports all three, which
 *    disarms e2's watch;
 *  - a child that inherits everything and blocks on a "go" pipe.
 *
 * Verified after SIGTERM: the child, then the root, call epoll_wait on ep:
 * the pipe's watch is reported, e2's disarmed one is not (e1's edge may be
 * reported again after a restore: re-registering a ready file is an edge);
 * ep's fdinfo lists exactly the fd numbers e1, pipe, e2 (watches are keyed
 * by fd number); EPOLL_CTL_MOD of e2 works and re-arms it (0xbeef is then
 * reported); EPOLL_CTL_ADD of e1 says EEXIST. e1 gives 1 five times, then
 * EAGAIN; e2 gives 0x123456789; sfd gives SIGUSR1 once, then EAGAIN, and
 * its mask is {SIGUSR1, SIGUSR2}; t1 has 3500-3600 s left, no period; t2
 * has a 20 ms period, an expiration and fires again; t3 has 3500-3600 s left and its fdinfo says
 * "settime flags: 03"; t4 reads 7.
 *
 * Corruptions: "eventfd", "signalfd", "timerfd" (t1 and t2 disarmed), "epoll".
 */
#include "zdtm.h"
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)
#define HOUR_NS (3600ULL * 1000000000ULL)

static int e1, e2, sfd, t1, t2, t3, t4, pr, pw, ep;

/* The data values epoll_wait reports now: bit 0 0x1234, 1 0xdead, 2 0xbeef. */
static int ready_set(void)
{
	struct epoll_event evs[8];
	int n = epoll_wait(ep, evs, 8, 0), set = 0;

	for (int i = 0; i < n; i++)
		set |= evs[i].data.u64 == 0x1234 ? 1 : evs[i].data.u64 == 0xdead ? 2 : evs[i].data.u64 == 0xbeef ? 4 : 8;
	return n < 0 ? -1 : set;
}

static int child(int gor)
{
	char go;
	int set;

	while (read(gor, &go, 1) < 0 && errno == EINTR)
		;
	set = ready_set();
	/* exit codes: 0 fine, 1 pipe watch missing, 2 disarmed watch reported */
	if (set < 0 || !(set & 2))
		return 1;
	return set & 4 ? 2 : 0;
}

static uint64_t left_ns(int fd, uint64_t *interval)
{
	struct itimerspec its;

	if (timerfd_gettime(fd, &its) < 0)
		return 0;
	*interval = its.it_interval.tv_sec * 1000000000ULL + its.it_interval.tv_nsec;
	return its.it_value.tv_sec * 1000000000ULL + its.it_value.tv_nsec;
}

/* The value of "KEY: ..." in /proc/self/fdinfo/FD, or "" */
static const char *fdinfo(int fd, const char *key, char *out, size_t n)
{
	static char buf[4096];
	char path[64], *p;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	out[0] = 0;
	if (zdtm_read_file(path, buf, sizeof(buf)) < 0 || !(p = strstr(buf, key)))
		return out;
	p += strlen(key);
	while (*p == ':' || *p == ' ' || *p == '\t')
		p++;
	snprintf(out, n, "%.*s", (int)strcspn(p, "\n"), p);
	return out;
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

static void check_epoll(void)
{
	static char buf[4096];
	char path[64];
	struct epoll_event ev = { .events = EPOLLIN };
	int set = ready_set(), got[8], want[3] = { e1, pr, e2 }, n = 0;
	char *p;

	ZCHECK(set >= 0 && (set & 2), "epoll: the pipe's watch is not reported (set %d)", set);
	ZCHECK(set >= 0 && !(set & 4), "epoll: the disarmed one-shot watch is reported");
	/* the kernel lists watches in its own order: compare sorted */
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ep);
	if (zdtm_read_file(path, buf, sizeof(buf)) >= 0)
		for (p = buf; n < 8 && (p = strstr(p, "tfd:")); p += 4)
			got[n++] = atoi(p + 4);
	qsort(got, n, sizeof(int), cmp_int);
	qsort(want, 3, sizeof(int), cmp_int);
	ZCHECK(n == 3 && !memcmp(got, want, sizeof(want)), "epoll watches %d fds (first %d), expected fds %d, %d, %d", n,
	       n ? got[0] : -1, want[0], want[1], want[2]);
	ev.data.u64 = 0xbeef;
	ZCHECK(epoll_ctl(ep, EPOLL_CTL_MOD, e2, &ev) == 0, "EPOLL_CTL_MOD of fd %d: %s", e2, strerror(errno));
	set = ready_set();
	ZCHECK(set >= 0 && (set & 4), "epoll: e2's re-armed watch is not reported (set %d)", set);
	ev.data.u64 = 1;
	ZCHECK(epoll_ctl(ep, EPOLL_CTL_ADD, e1, &ev) < 0 && errno == EEXIST, "EPOLL_CTL_ADD of watched fd %d did not say EEXIST", e1);
}

static void check_fds(void)
{
	struct signalfd_siginfo si;
	uint64_t v, interval, left;
	char buf[64];
	struct pollfd pfd = { .fd = t2, .events = POLLIN };

	for (int i = 0; i < 5; i++)
		ZCHECK(read(e1, &v, 8) == 8 && v == 1, "e1 read %d: %s", i, strerror(errno));
	ZCHECK(read(e1, &v, 8) < 0 && errno == EAGAIN, "e1 not empty after five reads");
	ZCHECK(read(e2, &v, 8) == 8 && v == 0x123456789ULL, "e2 count %#llx", (unsigned long long)v);
	ZCHECK(read(sfd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo == SIGUSR1, "signalfd: no SIGUSR1 (%s)", strerror(errno));
	ZCHECK(read(sfd, &si, sizeof(si)) < 0 && errno == EAGAIN, "signalfd: a second signal");
	ZCHECK(!strcmp(fdinfo(sfd, "sigmask", buf, sizeof(buf)), "0000000000000a00"), "signalfd mask %s", buf);
	left = left_ns(t1, &interval);
	ZCHECK(left > HOUR_NS - 100000000000ULL && left <= HOUR_NS && interval == 0, "t1: %llu ns left, period %llu",
	       (unsigned long long)left, (unsigned long long)interval);
	left = left_ns(t2, &interval);
	ZCHECK(interval == 20000000, "t2 period %llu ns", (unsigned long long)interval);
	ZCHECK(poll(&pfd, 1, 2000) == 1 && read(t2, &v, 8) == 8 && v >= 1, "t2 has no expiration");
	ZCHECK(poll(&pfd, 1, 2000) == 1 && read(t2, &v, 8) == 8 && v >= 1, "t2 does not fire again");
	left = left_ns(t3, &interval);
	ZCHECK(left > HOUR_NS - 100000000000ULL && left <= HOUR_NS, "t3: %llu ns left", (unsigned long long)left);
	ZCHECK(!strcmp(fdinfo(t3, "settime flags", buf, sizeof(buf)), "03"), "t3 settime flags %s", buf);
	ZCHECK(read(t4, &v, 8) == 8 && v == 7, "t4 read %llu", (unsigned long long)v);
}

int main(int argc, char **argv)
{
	struct itimerspec its = { 0 };
	struct epoll_event ev, evs[8];
	sigset_t set;
	uint64_t v;
	int p[2], gp[2], status;
	pid_t kid;

	zdtm_init(argc, argv);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	e1 = eventfd(5, EFD_SEMAPHORE | EFD_NONBLOCK);
	e2 = eventfd(0, EFD_NONBLOCK);
	v = 0x123456789ULL;
	if (e1 < 0 || e2 < 0 || write(e2, &v, 8) != 8)
		zdtm_fail("eventfd: %s", strerror(errno));
	sfd = signalfd(-1, &set, SFD_NONBLOCK);
	if (sfd < 0 || raise(SIGUSR1))
		zdtm_fail("signalfd: %s", strerror(errno));
	t1 = timerfd_create(CLOCK_MONOTONIC, 0);
	t2 = timerfd_create(CLOCK_MONOTONIC, 0);
	t3 = timerfd_create(CLOCK_REALTIME, 0);
	t4 = timerfd_create(CLOCK_MONOTONIC, 0);
	its.it_value.tv_sec = 3600;
	if (t1 < 0 || t2 < 0 || t3 < 0 || t4 < 0 || timerfd_settime(t1, 0, &its, NULL))
		zdtm_fail("timerfd: %s", strerror(errno));
	its.it_value.tv_sec = 0;
	its.it_value.tv_nsec = its.it_interval.tv_nsec = 20000000;
	if (timerfd_settime(t2, 0, &its, NULL))
		zdtm_fail("timerfd t2: %s", strerror(errno));
	memset(&its, 0, sizeof(its));
	clock_gettime(CLOCK_REALTIME, &its.it_value);
	its.it_value.tv_sec += 3600;
	if (timerfd_settime(t3, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL))
		zdtm_fail("timerfd t3: %s", strerror(errno));
	v = 7;
	if (ioctl(t4, TFD_IOC_SET_TICKS, &v))
		zdtm_fail("TFD_IOC_SET_TICKS: %s", strerror(errno));
	if (pipe(p) || write(p[1], "abc", 3) != 3 || pipe(gp))
		zdtm_fail("pipe: %s", strerror(errno));
	pr = p[0];
	pw = p[1];
	ep = epoll_create1(0);
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = 0x1234;
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, e1, &ev))
		zdtm_fail("epoll e1: %s", strerror(errno));
	ev.events = EPOLLIN;
	ev.data.u64 = 0xdead;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, pr, &ev))
		zdtm_fail("epoll pipe: %s", strerror(errno));
	ev.events = EPOLLIN | EPOLLONESHOT;
	ev.data.u64 = 0xbeef;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, e2, &ev))
		zdtm_fail("epoll e2: %s", strerror(errno));
	if (epoll_wait(ep, evs, 8, 0) != 3)
		zdtm_fail("epoll_wait before the checkpoint: not three events");
	/* t2 expires before the checkpoint: no time left, one unread tick */
	zdtm_sleep_ms(50);
	kid = fork();
	if (kid == 0)
		_exit(child(gp[0]));
	close(gp[0]);
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("eventfd"))
		read(e1, &v, 8);
	if (zdtm_corrupt("signalfd"))
		sigwaitinfo(&(sigset_t){ { 1UL << (SIGUSR1 - 1) } }, NULL);
	if (zdtm_corrupt("timerfd")) {
		memset(&its, 0, sizeof(its));
		timerfd_settime(t1, 0, &its, NULL);
		its.it_interval.tv_nsec = 20000000;
		timerfd_settime(t2, 0, &its, NULL);
	}
	if (zdtm_corrupt("epoll"))
		epoll_ctl(ep, EPOLL_CTL_DEL, pr, NULL);

	if (write(gp[1], "g", 1) != 1)
		zdtm_err("go: %s", strerror(errno));
	if (zdtm_waitpid(kid, &status, 0, 5000) != kid || !WIFEXITED(status))
		zdtm_err("child did not exit");
	else
		ZCHECK(WEXITSTATUS(status) == 0, "child: %s",
		       WEXITSTATUS(status) == 1 ? "the pipe's watch is not reported" : "the disarmed watch is reported");
	check_epoll();
	check_fds();
	zdtm_finish();
}
