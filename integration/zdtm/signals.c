/*
 * signals (cf. zdtm sigpending, sigaltstack, itimer, sigaction tests).
 *
 * State built before the checkpoint:
 *  - dispositions: SIGUSR1 SA_SIGINFO|SA_RESTART with sa_mask {SIGHUP,SIGQUIT};
 *    SIGUSR2 SA_SIGINFO|SA_ONSTACK; SIGHUP SA_RESETHAND|SA_NODEFER; SIGPIPE
 *    ignored; SIGALRM counting ticks (SA_RESTART).  All 64 sigactions are
 *    recorded and compared (handler, flags, restorer, mask) after restore.
 *  - an alternate signal stack on the main thread (64 KiB static buffer); a
 *    helper thread has none (must stay SS_DISABLE).
 *  - main thread blocked mask {SIGWINCH, SIGPROF, SIGRTMIN+2, SIGRTMIN+3,
 *    SIGRTMIN+4}; helper thread additionally blocks SIGALRM and SIGTERM.
 *  - pending: SIGRTMIN+2 queued twice process-wide (sigqueue, values 101 and
 *    102), SIGWINCH process-wide via kill() (SI_USER), SIGRTMIN+3 queued to
 *    the main thread (rt_tgsigqueueinfo, value 201), SIGRTMIN+4 queued to the
 *    helper thread (value 301).
 *  - ITIMER_REAL: 20 ms interval; ITIMER_VIRTUAL: 50 s value, 7 s interval.
 *
 * Verified after SIGTERM: sigactions, masks of both threads, sigaltstack of
 * both threads, /proc/thread-self/status SigPnd/ShdPnd for both threads,
 * the queued siginfo (order, si_value, si_code, si_pid, si_uid) dequeued by
 * sigtimedwait, the itimers (intervals exact, values in range) and that
 * ITIMER_REAL keeps firing, plus behaviour: SIGUSR1 handler gets its
 * siginfo and runs with its sa_mask, SIGUSR2 runs on the alternate stack,
 * SIGHUP is reset to SIG_DFL after one delivery and is not blocked while its
 * handler runs.
 *
 * Corruptions: "mask", "pending", "action", "itimer", "altstack".
 */
#include "zdtm.h"
#include <pthread.h>
#include <sys/time.h>

#define ALTSZ 65536
#define SIG_SHARED (SIGRTMIN + 2)
#define SIG_THREAD (SIGRTMIN + 3)
#define SIG_HELPER (SIGRTMIN + 4)

static char altstack[ALTSZ] __attribute__((aligned(16)));
static volatile int alrm_ticks;
static volatile int usr1_ran, usr1_value, usr1_code, usr1_mask_ok;
static volatile int usr2_ran, usr2_on_altstack;
static volatile int hup_ran, hup_unblocked;
static struct sigaction acts_before[65];
static sigset_t main_mask, helper_mask;
static volatile pid_t helper_tid;
static volatile int helper_go, helper_done;
static char helper_err[256];

static void on_alrm(int sig)
{
	(void)sig;
	alrm_ticks++;
}

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	sigset_t cur;

	(void)sig;
	(void)uc;
	usr1_ran++;
	usr1_value = si->si_value.sival_int;
	usr1_code = si->si_code;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	usr1_mask_ok = sigismember(&cur, SIGHUP) && sigismember(&cur, SIGQUIT) && sigismember(&cur, SIGUSR1);
}

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	char here;

	(void)sig;
	(void)si;
	(void)uc;
	usr2_ran++;
	usr2_on_altstack = &here >= altstack && &here < altstack + ALTSZ;
}

static void on_hup(int sig)
{
	sigset_t cur;

	(void)sig;
	hup_ran++;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	hup_unblocked = !sigismember(&cur, SIGHUP);
}

static int queue_to_thread(pid_t tid, int sig, int value)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	si.si_signo = sig;
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_int = value;
	return syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, sig, &si);
}

/* Parse "<field>:\t<hex>" out of /proc/thread-self/status. */
static unsigned long long status_mask(const char *field)
{
	char buf[8192], *p;
	size_t fl = strlen(field);

	if (zdtm_read_file("/proc/thread-self/status", buf, sizeof(buf)) < 0)
		return ~0ull;
	for (p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (strncmp(p, field, fl) == 0 && p[fl] == ':')
			return strtoull(p + fl + 1, NULL, 16);
	return ~0ull;
}

static unsigned long long bit(int sig)
{
	return 1ull << (sig - 1);
}

static void mask_to_str(const sigset_t *s, char *out, size_t n)
{
	unsigned long long m = 0;

	for (int i = 1; i <= 64; i++)
		if (sigismember(s, i) == 1)
			m |= bit(i);
	snprintf(out, n, "%016llx", m);
}

static int mask_eq(const sigset_t *a, const sigset_t *b)
{
	for (int i = 1; i <= 64; i++)
		if (sigismember(a, i) != sigismember(b, i))
			return 0;
	return 1;
}

/* Check a pending queued signal by dequeuing it. */
static void expect_queued(int sig, int code, int value, const char *what)
{
	struct timespec zero = { 0, 0 };
	siginfo_t si;
	sigset_t s;
	int r;

	sigemptyset(&s);
	sigaddset(&s, sig);
	r = sigtimedwait(&s, &si, &zero);
	if (r != sig) {
		zdtm_err("%s: signal %d not pending (%s)", what, sig, strerror(errno));
		return;
	}
	ZCHECK(si.si_code == code, "%s: si_code %d, expected %d", what, si.si_code, code);
	ZCHECK(si.si_pid == getpid(), "%s: si_pid %d, expected %d", what, (int)si.si_pid, (int)getpid());
	ZCHECK(si.si_uid == getuid(), "%s: si_uid %d", what, (int)si.si_uid);
	if (code == SI_QUEUE)
		ZCHECK(si.si_value.sival_int == value, "%s: si_value %d, expected %d", what,
		       si.si_value.sival_int, value);
}

static void *helper_main(void *arg)
{
	sigset_t add, cur;
	stack_t ss;
	struct timespec zero = { 0, 0 };
	siginfo_t si;
	unsigned long long pnd;

	(void)arg;
	sigemptyset(&add);
	sigaddset(&add, SIGALRM);
	sigaddset(&add, SIGTERM);
	sigaddset(&add, SIG_HELPER);
	pthread_sigmask(SIG_BLOCK, &add, NULL);
	pthread_sigmask(SIG_BLOCK, NULL, &helper_mask);
	helper_tid = zdtm_gettid();

	while (!helper_go)
		zdtm_sleep_ms(1);

	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	if (!mask_eq(&cur, &helper_mask)) {
		char a[32], b[32];
		mask_to_str(&cur, a, sizeof(a));
		mask_to_str(&helper_mask, b, sizeof(b));
		snprintf(helper_err, sizeof(helper_err), "helper thread mask %s, expected %s", a, b);
		goto out;
	}
	if (sigaltstack(NULL, &ss) < 0 || !(ss.ss_flags & SS_DISABLE)) {
		snprintf(helper_err, sizeof(helper_err), "helper thread has an altstack (flags %#x, sp %p)",
			 ss.ss_flags, ss.ss_sp);
		goto out;
	}
	pnd = status_mask("SigPnd");
	if (pnd != bit(SIG_HELPER)) {
		snprintf(helper_err, sizeof(helper_err), "helper thread SigPnd %016llx, expected %016llx", pnd,
			 bit(SIG_HELPER));
		goto out;
	}
	sigemptyset(&add);
	sigaddset(&add, SIG_HELPER);
	if (sigtimedwait(&add, &si, &zero) != SIG_HELPER) {
		snprintf(helper_err, sizeof(helper_err), "helper: SIGRTMIN+4 not pending: %s", strerror(errno));
		goto out;
	}
	if (si.si_value.sival_int != 301 || si.si_code != SI_QUEUE)
		snprintf(helper_err, sizeof(helper_err), "helper: SIGRTMIN+4 value %d code %d",
			 si.si_value.sival_int, si.si_code);
out:
	helper_done = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	struct itimerval it;
	stack_t ss;
	sigset_t blk, cur;
	pthread_t helper;
	unsigned long long pnd, shd;
	int ticks;

	zdtm_init(argc, argv);

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGHUP);
	sigaddset(&sa.sa_mask, SIGQUIT);
	sigaction(SIGUSR1, &sa, NULL);

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr2;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_hup;
	sa.sa_flags = SA_RESETHAND | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGHUP, &sa, NULL);

	signal(SIGPIPE, SIG_IGN);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alrm;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);

	ss.ss_sp = altstack;
	ss.ss_size = ALTSZ;
	ss.ss_flags = 0;
	if (sigaltstack(&ss, NULL) < 0)
		zdtm_fail("sigaltstack: %s", strerror(errno));

	sigemptyset(&blk);
	sigaddset(&blk, SIGWINCH);
	sigaddset(&blk, SIGPROF);
	sigaddset(&blk, SIG_SHARED);
	sigaddset(&blk, SIG_THREAD);
	sigaddset(&blk, SIG_HELPER);
	sigprocmask(SIG_BLOCK, &blk, NULL);
	sigprocmask(SIG_BLOCK, NULL, &main_mask);

	if (pthread_create(&helper, NULL, helper_main, NULL))
		zdtm_fail("pthread_create failed");
	while (!helper_tid)
		zdtm_sleep_ms(1);

	{
		union sigval v;
		v.sival_int = 101;
		if (sigqueue(getpid(), SIG_SHARED, v) < 0)
			zdtm_fail("sigqueue: %s", strerror(errno));
		v.sival_int = 102;
		if (sigqueue(getpid(), SIG_SHARED, v) < 0)
			zdtm_fail("sigqueue: %s", strerror(errno));
	}
	kill(getpid(), SIGWINCH);
	if (queue_to_thread(zdtm_gettid(), SIG_THREAD, 201) < 0)
		zdtm_fail("rt_tgsigqueueinfo(main): %s", strerror(errno));
	if (queue_to_thread(helper_tid, SIG_HELPER, 301) < 0)
		zdtm_fail("rt_tgsigqueueinfo(helper): %s", strerror(errno));

	it.it_interval.tv_sec = 0;
	it.it_interval.tv_usec = 20000;
	it.it_value = it.it_interval;
	setitimer(ITIMER_REAL, &it, NULL);
	it.it_interval.tv_sec = 7;
	it.it_interval.tv_usec = 0;
	it.it_value.tv_sec = 50;
	it.it_value.tv_usec = 0;
	setitimer(ITIMER_VIRTUAL, &it, NULL);

	for (int i = 1; i <= 64; i++)
		sigaction(i, NULL, &acts_before[i]);

	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("mask")) {
		sigemptyset(&blk);
		sigaddset(&blk, SIGPROF);
		sigprocmask(SIG_UNBLOCK, &blk, NULL);
	}
	if (zdtm_corrupt("pending")) {
		sigemptyset(&blk);
		sigaddset(&blk, SIG_SHARED);
		sigwaitinfo(&blk, NULL);
	}
	if (zdtm_corrupt("action")) {
		sigaction(SIGUSR1, NULL, &sa);
		sa.sa_flags &= ~SA_RESTART;
		sigaction(SIGUSR1, &sa, NULL);
	}
	if (zdtm_corrupt("itimer")) {
		memset(&it, 0, sizeof(it));
		setitimer(ITIMER_REAL, &it, NULL);
	}
	if (zdtm_corrupt("altstack")) {
		ss.ss_size = ALTSZ - 4096;
		sigaltstack(&ss, NULL);
	}

	/* static state first: nothing below may change it before it is read */
	for (int i = 1; i <= 64; i++) {
		struct sigaction now;
		const struct sigaction *was = &acts_before[i];
		if (i == SIGKILL || i == SIGSTOP)
			continue;
		sigaction(i, NULL, &now);
		ZCHECK(now.sa_handler == was->sa_handler, "signal %d: handler %p, expected %p", i,
		       (void *)now.sa_handler, (void *)was->sa_handler);
		ZCHECK(now.sa_flags == was->sa_flags, "signal %d: sa_flags %#x, expected %#x", i, now.sa_flags,
		       was->sa_flags);
		ZCHECK(now.sa_restorer == was->sa_restorer, "signal %d: sa_restorer %p, expected %p", i,
		       (void *)now.sa_restorer, (void *)was->sa_restorer);
		ZCHECK(mask_eq(&now.sa_mask, &was->sa_mask), "signal %d: sa_mask differs", i);
	}

	sigprocmask(SIG_BLOCK, NULL, &cur);
	if (!mask_eq(&cur, &main_mask)) {
		char a[32], b[32];
		mask_to_str(&cur, a, sizeof(a));
		mask_to_str(&main_mask, b, sizeof(b));
		zdtm_err("main thread mask %s, expected %s", a, b);
	}

	if (sigaltstack(NULL, &ss) < 0)
		zdtm_err("sigaltstack: %s", strerror(errno));
	else
		ZCHECK(ss.ss_sp == altstack && ss.ss_size == ALTSZ && ss.ss_flags == 0,
		       "altstack sp %p size %zu flags %#x, expected %p %d 0", ss.ss_sp, ss.ss_size, ss.ss_flags,
		       (void *)altstack, ALTSZ);

	pnd = status_mask("SigPnd") & ~(bit(SIGALRM) | bit(SIGTERM));
	shd = status_mask("ShdPnd") & ~(bit(SIGALRM) | bit(SIGTERM));
	ZCHECK(pnd == bit(SIG_THREAD), "main SigPnd %016llx, expected %016llx", pnd, bit(SIG_THREAD));
	ZCHECK(shd == (bit(SIG_SHARED) | bit(SIGWINCH)), "ShdPnd %016llx, expected %016llx", shd,
	       bit(SIG_SHARED) | bit(SIGWINCH));

	if (getitimer(ITIMER_REAL, &it) < 0)
		zdtm_err("getitimer: %s", strerror(errno));
	else {
		ZCHECK(it.it_interval.tv_sec == 0 && it.it_interval.tv_usec == 20000,
		       "ITIMER_REAL interval %ld.%06ld, expected 0.020000", (long)it.it_interval.tv_sec,
		       (long)it.it_interval.tv_usec);
		ZCHECK(it.it_value.tv_sec == 0 && it.it_value.tv_usec > 0 && it.it_value.tv_usec <= 20000,
		       "ITIMER_REAL value %ld.%06ld", (long)it.it_value.tv_sec, (long)it.it_value.tv_usec);
	}
	if (getitimer(ITIMER_VIRTUAL, &it) < 0)
		zdtm_err("getitimer: %s", strerror(errno));
	else {
		ZCHECK(it.it_interval.tv_sec == 7 && it.it_interval.tv_usec == 0,
		       "ITIMER_VIRTUAL interval %ld.%06ld, expected 7.000000", (long)it.it_interval.tv_sec,
		       (long)it.it_interval.tv_usec);
		/* the kernel rounds the CPU-time value up to a tick */
		ZCHECK(it.it_value.tv_sec >= 40 && (it.it_value.tv_sec < 50 ||
		       (it.it_value.tv_sec == 50 && it.it_value.tv_usec <= 100000)),
		       "ITIMER_VIRTUAL value %ld.%06ld, expected (40, 50.1]", (long)it.it_value.tv_sec,
		       (long)it.it_value.tv_usec);
	}

	/* the helper thread checks its own view */
	helper_go = 1;
	for (int i = 0; i < 5000 && !helper_done; i++)
		zdtm_sleep_ms(1);
	ZCHECK(helper_done, "helper thread did not finish");
	if (helper_err[0])
		zdtm_err("%s", helper_err);

	/* dequeue the pending signals and check their siginfo */
	expect_queued(SIG_SHARED, SI_QUEUE, 101, "SIGRTMIN+2 #1");
	expect_queued(SIG_SHARED, SI_QUEUE, 102, "SIGRTMIN+2 #2");
	expect_queued(SIG_THREAD, SI_QUEUE, 201, "SIGRTMIN+3");
	expect_queued(SIGWINCH, SI_USER, 0, "SIGWINCH");
	pnd = status_mask("SigPnd") & ~(bit(SIGALRM) | bit(SIGTERM));
	shd = status_mask("ShdPnd") & ~(bit(SIGALRM) | bit(SIGTERM));
	ZCHECK(pnd == 0 && shd == 0, "still pending after dequeue: SigPnd %016llx ShdPnd %016llx", pnd, shd);

	/* ITIMER_REAL keeps firing */
	ticks = alrm_ticks;
	for (int i = 0; i < 3000 && alrm_ticks < ticks + 5; i++)
		zdtm_sleep_ms(1);
	ZCHECK(alrm_ticks >= ticks + 5, "ITIMER_REAL stopped firing (%d ticks after wake-up)", alrm_ticks - ticks);

	/* handlers behave as installed */
	queue_to_thread(zdtm_gettid(), SIGUSR1, 55);
	ZCHECK(usr1_ran == 1, "SIGUSR1 handler ran %d times", usr1_ran);
	ZCHECK(usr1_value == 55 && usr1_code == SI_QUEUE, "SIGUSR1 siginfo value %d code %d", usr1_value,
	       usr1_code);
	ZCHECK(usr1_mask_ok, "SIGUSR1 handler ran without its sa_mask");
	raise(SIGUSR2);
	ZCHECK(usr2_ran == 1, "SIGUSR2 handler ran %d times", usr2_ran);
	ZCHECK(usr2_on_altstack, "SIGUSR2 handler did not run on the alternate stack");
	raise(SIGHUP);
	ZCHECK(hup_ran == 1, "SIGHUP handler ran %d times", hup_ran);
	ZCHECK(hup_unblocked, "SIGHUP blocked inside its SA_NODEFER handler");
	sigaction(SIGHUP, NULL, &sa);
	ZCHECK(sa.sa_handler == SIG_DFL, "SIGHUP not reset by SA_RESETHAND");

	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	if (helper_done) {
		struct timespec dl;
		int r;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 5;
		r = pthread_timedjoin_np(helper, NULL, &dl);
		ZCHECK(r == 0, "pthread_join(helper): %s", strerror(r));
	}
	zdtm_finish();
}
