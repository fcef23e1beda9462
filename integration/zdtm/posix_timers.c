/*
 * posix_timers (cf. zdtm posix_timers): timers made with timer_create, by
 * raw syscall so the ids are the kernel's.
 *
 * State built before the checkpoint (five timers created, two deleted, so
 * the ids left are not 0, 1, 2):
 *  - A: CLOCK_MONOTONIC, one shot in 60 s, SIGALRM (never fires here);
 *  - B: CLOCK_REALTIME, SIGEV_NONE, first expiry in 30 s, period 7 s;
 *  - C: CLOCK_MONOTONIC, every 20 ms, SIGRTMIN+2 (blocked) with
 *    sigev_value 0xfeedface: signals queue while the test waits;
 *  - D: CLOCK_MONOTONIC, every 30 ms, SIGRTMIN+3 to a second thread
 *    (SIGEV_THREAD_ID), which counts what it receives in sigwaitinfo
 *    (the signal is blocked in every thread);
 *  - E: CLOCK_MONOTONIC, created and left disarmed.
 *
 * Verified after SIGTERM: /proc/self/timers lists exactly these five ids;
 * timer_gettime on each id the test holds says: A armed with at most 60 s
 * left and no period, B with at most 30 s left and a 7 s period, C and D
 * with their periods, E disarmed; C's signal arrives with si_code SI_TIMER,
 * its id and its sigev_value; the thread receives further SIGRTMIN+3 from
 * D, each naming D's id.
 *
 * Corruptions: "delete" (A deleted), "period" (B's period set to 8 s),
 * "thread" (D deleted: the thread receives nothing more).
 */
#include "zdtm.h"
#include <pthread.h>

static int tc(clockid_t clock, int notify, int sig, unsigned long value, pid_t tid)
{
	struct sigevent ev;
	int id = -1;

	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = notify;
	ev.sigev_signo = sig;
	ev.sigev_value.sival_ptr = (void *)value;
	ev._sigev_un._tid = tid;
	if (syscall(SYS_timer_create, clock, &ev, &id))
		zdtm_fail("timer_create: %s", strerror(errno));
	return id;
}

static void arm(int id, long value_ms, long period_ms)
{
	struct itimerspec its = {
		.it_value = { value_ms / 1000, value_ms % 1000 * 1000000 },
		.it_interval = { period_ms / 1000, period_ms % 1000 * 1000000 },
	};

	if (syscall(SYS_timer_settime, id, 0, &its, NULL))
		zdtm_fail("timer_settime %d: %s", id, strerror(errno));
}

static int get(int id, long long *value_ms, long long *period_ms)
{
	struct itimerspec its;

	if (syscall(SYS_timer_gettime, id, &its))
		return -1;
	*value_ms = its.it_value.tv_sec * 1000LL + its.it_value.tv_nsec / 1000000;
	*period_ms = its.it_interval.tv_sec * 1000LL + its.it_interval.tv_nsec / 1000000;
	return 0;
}

static volatile pid_t thread_tid;
static volatile int thread_bad, thread_got;
static int timer_d;

static void *receiver(void *arg)
{
	sigset_t s;
	siginfo_t si;

	(void)arg;
	sigemptyset(&s);
	sigaddset(&s, SIGRTMIN + 3);
	thread_tid = zdtm_gettid();
	for (;;) {
		if (sigwaitinfo(&s, &si) < 0)
			continue;
		if (si.si_code != SI_TIMER || si.si_timerid != timer_d)
			thread_bad++;
		__atomic_add_fetch(&thread_got, 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int a, b, c, d, e, x, y, n = 0, want, got, start;
	long long v, p;
	char text[4096], *line, *save = NULL;
	sigset_t blk, one;
	siginfo_t si;
	struct timespec ts = { 2, 0 };
	pthread_t th;

	zdtm_init(argc, argv);
	sigemptyset(&blk);
	sigaddset(&blk, SIGRTMIN + 2);
	sigaddset(&blk, SIGRTMIN + 3);
	sigprocmask(SIG_BLOCK, &blk, NULL);
	if (pthread_create(&th, NULL, receiver, NULL))
		zdtm_fail("pthread_create");
	while (!thread_tid)
		usleep(1000);

	x = tc(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0, 0);
	a = tc(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGALRM, 0, 0);
	y = tc(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0, 0);
	b = tc(CLOCK_REALTIME, SIGEV_NONE, 0, 0, 0);
	c = tc(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 2, 0xfeedface, 0);
	timer_d = d = tc(CLOCK_MONOTONIC, SIGEV_THREAD_ID, SIGRTMIN + 3, 0, thread_tid);
	e = tc(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0, 0);
	syscall(SYS_timer_delete, x);
	syscall(SYS_timer_delete, y);
	arm(a, 60000, 0);
	arm(b, 30000, 7000);
	arm(c, 20, 20);
	arm(d, 30, 30);
	while (__atomic_load_n(&thread_got, __ATOMIC_SEQ_CST) < 2)
		usleep(1000);
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("delete"))
		syscall(SYS_timer_delete, a);
	if (zdtm_corrupt("period"))
		arm(b, 30000, 8000);
	if (zdtm_corrupt("thread"))
		syscall(SYS_timer_delete, d);

	/* Exactly our five ids. */
	if (zdtm_read_file("/proc/self/timers", text, sizeof(text)) < 0)
		zdtm_err("read /proc/self/timers: %s", strerror(errno));
	want = (1 << a) | (1 << b) | (1 << c) | (1 << d) | (1 << e);
	got = 0;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int id;

		if (sscanf(line, "ID: %d", &id) == 1) {
			n++;
			if (id >= 0 && id < 31)
				got |= 1 << id;
		}
	}
	ZCHECK(n == 5 && got == want, "%d timers listed, ids mask %#x, want 5 with %#x", n, got, want);

	ZCHECK(!get(a, &v, &p) && v > 0 && v <= 60000 && p == 0, "A: %lld ms left, period %lld", v, p);
	ZCHECK(!get(b, &v, &p) && v > 0 && v <= 30000 && p == 7000, "B: %lld ms left, period %lld", v, p);
	ZCHECK(!get(c, &v, &p) && p == 20, "C: period %lld", p);
	ZCHECK(!get(d, &v, &p) && p == 30, "D: period %lld", p);
	ZCHECK(!get(e, &v, &p) && v == 0 && p == 0, "E: %lld ms left, period %lld", v, p);

	sigemptyset(&one);
	sigaddset(&one, SIGRTMIN + 2);
	ZCHECK(sigtimedwait(&one, &si, &ts) == SIGRTMIN + 2 && si.si_code == SI_TIMER && si.si_timerid == c &&
		       si.si_value.sival_ptr == (void *)0xfeedface,
	       "C's signal: code %d timer %d value %p", si.si_code, si.si_timerid, si.si_value.sival_ptr);
	/* The queued one may predate the restore; take a fresh one too. */
	ZCHECK(sigtimedwait(&one, &si, &ts) == SIGRTMIN + 2 && si.si_timerid == c, "no second signal from C");

	start = __atomic_load_n(&thread_got, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 200 && __atomic_load_n(&thread_got, __ATOMIC_SEQ_CST) < start + 3; i++)
		usleep(10000);
	ZCHECK(__atomic_load_n(&thread_got, __ATOMIC_SEQ_CST) >= start + 3, "the thread received %d signals from D in 2 s",
	       __atomic_load_n(&thread_got, __ATOMIC_SEQ_CST) - start);
	ZCHECK(!thread_bad, "the thread received %d signals not from D", thread_bad);
	zdtm_finish();
}
