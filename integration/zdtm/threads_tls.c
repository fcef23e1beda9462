/*
 * threads_tls (cf. zdtm pthread00): 4 worker threads that keep running.
 *
 * Each worker records gettid(), pthread_self(), the address of its __thread
 * variable and stores a thread-specific value in it; it then loops
 * incrementing a __thread counter (mirrored into a shared slot) with a short
 * nanosleep.  SIGTERM is blocked in the workers, so it wakes the main thread
 * in sigsuspend().
 *
 * Verified after SIGTERM:
 *  - the main thread's tid/pid are unchanged;
 *  - every worker's counter still advances after the wake-up (threads were
 *    restored runnable);
 *  - every worker, after being told to stop: gettid(), pthread_self(), the
 *    __thread address (FS base) and value are unchanged, and its __thread
 *    counter equals the mirror;
 *  - pthread_join() works: it needs the kernel's clear_child_tid (set by
 *    set_tid_address) to be restored, so it is done with a timeout and
 *    reported as such instead of hanging.
 *
 * Corruptions: "tls" changes one worker's __thread value, "tid" pretends a
 * tid changed, "stop_thread" makes one worker stop counting.
 */
#include "zdtm.h"
#include <pthread.h>

#define NTHREADS 4

static __thread unsigned long tls_value;
static __thread unsigned long tls_counter;

struct worker {
	int idx;
	pthread_t self;
	pid_t tid;
	void *tls_addr;
	volatile unsigned long mirror;
	volatile int done;
	char err[256];
};

static struct worker workers[NTHREADS];
static volatile int stop_workers;
static volatile int freeze_worker = -1;
static volatile int corrupt_tls = -1, corrupt_tid = -1;

static unsigned long expected_value(int i)
{
	return 0xfeed0000ul + (unsigned long)i * 0x1111;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	tls_value = expected_value(w->idx);
	tls_counter = 0;
	w->tid = zdtm_gettid();
	w->self = pthread_self();
	w->tls_addr = (void *)&tls_value;

	while (!stop_workers) {
		struct timespec ts = { 0, 500000 };
		if (freeze_worker != w->idx) {
			tls_counter++;
			w->mirror = tls_counter;
		}
		if (corrupt_tls == w->idx) {
			tls_value ^= 1;
			corrupt_tls = -1;
		}
		nanosleep(&ts, NULL);
	}

	if (zdtm_gettid() != w->tid || corrupt_tid == w->idx)
		snprintf(w->err, sizeof(w->err), "thread %d: gettid() %d, expected %d", w->idx,
			 (int)zdtm_gettid(), (int)w->tid);
	else if (!pthread_equal(pthread_self(), w->self))
		snprintf(w->err, sizeof(w->err), "thread %d: pthread_self changed", w->idx);
	else if ((void *)&tls_value != w->tls_addr)
		snprintf(w->err, sizeof(w->err), "thread %d: &tls_value %p, expected %p (FS base?)", w->idx,
			 (void *)&tls_value, w->tls_addr);
	else if (tls_value != expected_value(w->idx))
		snprintf(w->err, sizeof(w->err), "thread %d: tls_value %#lx, expected %#lx", w->idx, tls_value,
			 expected_value(w->idx));
	else if (tls_counter != w->mirror)
		snprintf(w->err, sizeof(w->err), "thread %d: tls_counter %lu != mirror %lu", w->idx,
			 tls_counter, (unsigned long)w->mirror);
	w->done = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	pid_t pid;
	sigset_t blk, old;
	unsigned long snap[NTHREADS];
	pthread_t th[NTHREADS];

	zdtm_init(argc, argv);
	pid = getpid();
	tls_value = 0xabcdef;

	/* workers inherit a mask with SIGTERM blocked */
	sigemptyset(&blk);
	sigaddset(&blk, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &blk, &old);
	for (int i = 0; i < NTHREADS; i++) {
		workers[i].idx = i;
		if (pthread_create(&th[i], NULL, worker_main, &workers[i]))
			zdtm_fail("pthread_create failed");
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	/* wait until every worker has started counting */
	for (int tries = 0;; tries++) {
		int all = 1;
		for (int i = 0; i < NTHREADS; i++)
			if (workers[i].mirror < 5)
				all = 0;
		if (all)
			break;
		if (tries > 10000)
			zdtm_fail("workers did not start");
		zdtm_sleep_ms(1);
	}
	for (int i = 0; i < NTHREADS; i++)
		ZCHECK(workers[i].tid != pid, "worker %d has the main tid", i);

	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("tls"))
		corrupt_tls = 2;
	if (zdtm_corrupt("tid"))
		corrupt_tid = 1;
	if (zdtm_corrupt("stop_thread"))
		freeze_worker = 3;

	ZCHECK(getpid() == pid, "getpid() = %d, expected %d", (int)getpid(), (int)pid);
	ZCHECK(zdtm_gettid() == pid, "main gettid() = %d, expected %d", (int)zdtm_gettid(), (int)pid);
	ZCHECK(tls_value == 0xabcdef, "main thread tls_value %#lx", tls_value);

	/* threads must still be running */
	for (int i = 0; i < NTHREADS; i++)
		snap[i] = workers[i].mirror;
	for (int i = 0; i < NTHREADS; i++) {
		int moved = 0;
		for (int t = 0; t < 2000 && !moved; t++) {
			moved = workers[i].mirror > snap[i] + 3;
			if (!moved)
				zdtm_sleep_ms(1);
		}
		ZCHECK(moved, "worker %d (tid %d) is not running: counter stuck at %lu", i, (int)workers[i].tid,
		       (unsigned long)workers[i].mirror);
	}

	stop_workers = 1;
	for (int i = 0; i < NTHREADS; i++) {
		int t;
		for (t = 0; t < 5000 && !workers[i].done; t++)
			zdtm_sleep_ms(1);
		if (!workers[i].done) {
			zdtm_err("worker %d did not finish its checks", i);
			continue;
		}
		if (workers[i].err[0])
			zdtm_err("%s", workers[i].err);
	}
	for (int i = 0; i < NTHREADS; i++) {
		struct timespec dl;
		int r;

		if (!workers[i].done)
			continue;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 5;
		r = pthread_timedjoin_np(th[i], NULL, &dl);
		ZCHECK(r == 0, "pthread_join(worker %d): %s (clear_child_tid not restored?)", i, strerror(r));
	}
	zdtm_finish();
}
