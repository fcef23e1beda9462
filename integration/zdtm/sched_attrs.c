/*
 * sched_attrs (cf. zdtm sched_policy00, sched_prio00, thp_disable,
 * membarrier): scheduling and small process-wide registrations.
 *
 * State built before the checkpoint:
 *  - main thread: SCHED_BATCH, nice 5, timer slack 200 us, I/O priority
 *    best-effort level 6;
 *  - thread "idle" also gets the idle I/O class and is pinned to the last
 *    CPU (with two or more; the others may run on every CPU);
 *  - thread "idle": SCHED_IDLE, timer slack 1 ms;
 *  - thread "rr": SCHED_RR priority 10 with SCHED_FLAG_RESET_ON_FORK (if
 *    the cgroup allows real-time threads; otherwise it stays SCHED_OTHER
 *    with nice -3 and the log says so), and the timer slack the kernel
 *    gives it (none for real-time threads);
 *  - PR_SET_THP_DISABLE, with PR_THP_DISABLE_EXCEPT_ADVISED where the
 *    kernel has it (6.18);
 *  - registered for MEMBARRIER_CMD_PRIVATE_EXPEDITED (not for its
 *    SYNC_CORE variant).
 *
 * Verified after SIGTERM: sched_getattr, PR_GET_TIMERSLACK and ioprio_get
 * in each thread show the same; PR_GET_THP_DISABLE is 1;
 * membarrier(PRIVATE_EXPEDITED) succeeds and its SYNC_CORE variant still
 * fails with EPERM.
 *
 * The CPU sets each thread may run on are compared too.
 *
 * Corruptions: "affinity" (the idle thread free again), "nice" (main
 * thread back to nice 0), "slack" (the idle
 * thread's slack back to 50 us), "thp" (THP enabled again), "io" (main
 * thread's I/O priority back to none).
 */
#include "zdtm.h"
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>

struct attr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
};

static int set_attr(pid_t tid, uint32_t policy, int nice, uint32_t prio, uint64_t flags)
{
	struct attr a = { sizeof(a), policy, flags, nice, prio, 0, 0, 0 };

	return syscall(SYS_sched_setattr, tid, &a, 0);
}

/* What a thread sees of itself: sched_getattr(0) and PR_GET_TIMERSLACK. */
struct seen {
	struct attr a;
	long long slack, ioprio;
	cpu_set_t cpus;
};

static void look(struct seen *s)
{
	memset(s, 0, sizeof(*s));
	if (syscall(SYS_sched_getattr, 0, &s->a, sizeof(s->a), 0))
		s->a.policy = 99;
	s->slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
	s->ioprio = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);
	sched_getaffinity(0, sizeof(s->cpus), &s->cpus);
}

static void check(const char *who, const struct seen *s, uint32_t policy, int nice, uint32_t prio, uint64_t flags, long long slack,
		  long long ioprio)
{
	const struct attr *a = &s->a;

	ZCHECK(a->policy == policy && a->nice == nice && a->priority == prio && (a->flags & 7) == flags,
	       "%s: policy %u nice %d priority %u flags %#llx, want %u %d %u %#llx", who, a->policy, a->nice, a->priority,
	       (unsigned long long)a->flags, policy, nice, prio, (unsigned long long)flags);
	ZCHECK(s->slack == slack, "%s: timer slack %lld, want %lld", who, s->slack, slack);
	ZCHECK(s->ioprio == ioprio, "%s: I/O priority %#llx, want %#llx", who, s->ioprio, ioprio);
}

/* Threads set themselves up, then wait for `go` to look at themselves. */
static volatile int up, go, done, corrupt_slack, corrupt_affinity, rr_ok = -1;
static struct seen idle_seen, rr_seen;
static cpu_set_t all_cpus, idle_cpus;
static long long rr_slack;

static void wait_and_look(struct seen *s)
{
	__atomic_add_fetch(&up, 1, __ATOMIC_SEQ_CST);
	while (!go)
		usleep(1000);
	if (s == &idle_seen && corrupt_slack)
		prctl(PR_SET_TIMERSLACK, 50000);
	if (s == &idle_seen && corrupt_affinity)
		sched_setaffinity(0, sizeof(all_cpus), &all_cpus);
	look(s);
	__atomic_add_fetch(&done, 1, __ATOMIC_SEQ_CST);
	for (;;)
		pause();
}

static void *idle_thread(void *arg)
{
	(void)arg;
	prctl(PR_SET_TIMERSLACK, 1000000);
	if (syscall(SYS_ioprio_set, 1, 0, 3 << 13) || set_attr(0, 5 /* SCHED_IDLE */, 0, 0, 0) ||
	    sched_setaffinity(0, sizeof(idle_cpus), &idle_cpus))
		zdtm_fail("SCHED_IDLE: %s", strerror(errno));
	wait_and_look(&idle_seen);
	return NULL;
}

static void *rr_thread(void *arg)
{
	(void)arg;
	if (set_attr(0, 2 /* SCHED_RR */, 0, 10, 1 /* RESET_ON_FORK */) == 0) {
		rr_ok = 1;
	} else {
		zdtm_log("no real-time threads here (%s): SCHED_OTHER nice -3 instead", strerror(errno));
		if (set_attr(0, 0, -3, 0, 0))
			zdtm_fail("nice -3: %s", strerror(errno));
		rr_ok = 0;
	}
	rr_slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0); /* 0 under a real-time policy */
	wait_and_look(&rr_seen);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t1, t2;
	struct seen main_seen;
	int thp;

	zdtm_init(argc, argv);
	sched_getaffinity(0, sizeof(all_cpus), &all_cpus);
	idle_cpus = all_cpus;
	if (CPU_COUNT(&all_cpus) > 1) {
		int last = -1;

		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &all_cpus))
				last = c;
		CPU_ZERO(&idle_cpus);
		CPU_SET(last, &idle_cpus);
	} else {
		zdtm_log("one CPU: the idle thread is not pinned");
	}
	if (pthread_create(&t1, NULL, idle_thread, NULL) || pthread_create(&t2, NULL, rr_thread, NULL))
		zdtm_fail("pthread_create");
	while (up < 2)
		usleep(1000);
	if (set_attr(0, 3 /* SCHED_BATCH */, 5, 0, 0) || prctl(PR_SET_TIMERSLACK, 200000) ||
	    (prctl(PR_SET_THP_DISABLE, 1, 2 /* EXCEPT_ADVISED */, 0, 0) && prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)) ||
	    syscall(SYS_ioprio_set, 1, 0, 2 << 13 | 6) ||
	    syscall(SYS_membarrier, 16 /* REGISTER_PRIVATE_EXPEDITED */, 0, 0))
		zdtm_fail("set up: %s", strerror(errno));
	thp = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("nice"))
		set_attr(0, 3, 0, 0, 0);
	corrupt_slack = zdtm_corrupt("slack");
	corrupt_affinity = zdtm_corrupt("affinity");
	if (zdtm_corrupt("io"))
		syscall(SYS_ioprio_set, 1, 0, 0);
	if (zdtm_corrupt("thp"))
		prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0);

	go = 1;
	while (done < 2)
		usleep(1000);
	look(&main_seen);
	ZCHECK(CPU_EQUAL(&main_seen.cpus, &all_cpus) && CPU_EQUAL(&rr_seen.cpus, &all_cpus), "main or rr thread not on every CPU");
	ZCHECK(CPU_EQUAL(&idle_seen.cpus, &idle_cpus), "idle thread on %d CPUs, want %d", CPU_COUNT(&idle_seen.cpus), CPU_COUNT(&idle_cpus));
	check("main", &main_seen, 3, 5, 0, 0, 200000, 2 << 13 | 6);
	check("idle", &idle_seen, 5, 0, 0, 0, 1000000, 3 << 13);
	if (rr_ok)
		check("rr", &rr_seen, 2, 0, 10, 1, rr_slack, 0);
	else
		check("rr", &rr_seen, 0, -3, 0, 0, rr_slack, 0);
	ZCHECK(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == thp, "THP disable is %d, want %d", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), thp);
	ZCHECK(syscall(SYS_membarrier, 8 /* PRIVATE_EXPEDITED */, 0, 0) == 0, "membarrier private expedited: %s", strerror(errno));
	ZCHECK(syscall(SYS_membarrier, 32 /* ..._SYNC_CORE */, 0, 0) < 0 && errno == EPERM, "membarrier sync-core did not fail with EPERM");
	zdtm_finish();
}
