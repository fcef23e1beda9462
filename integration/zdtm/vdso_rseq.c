/*
 * vdso_rseq (cf. zdtm vdso00..02, rseq00): vDSO clocks and rseq.
 *
 * Until SIGTERM the test loops over the vDSO-backed clock_gettime()
 * (MONOTONIC, REALTIME), gettimeofday() and time(), checking that
 * CLOCK_MONOTONIC never goes backwards (also across the checkpoint), with a
 * 1 ms nanosleep every 2000 iterations (so the checkpoint catches it either
 * in user space, possibly inside the vDSO, or in a syscall).
 *
 * Verified after SIGTERM:
 *  - monotonic never decreased; vDSO clock_gettime agrees with the raw
 *    syscall (within 50 ms) for MONOTONIC and REALTIME, so the vvar pages
 *    are the live kernel ones, not a stale copy; time advances (a 20 ms
 *    sleep moves both by >= 20 ms); gettimeofday/time agree with REALTIME;
 *  - the [vdso] mapping still starts at getauxval(AT_SYSINFO_EHDR) as
 *    recorded at start;
 *  - rseq registration is active for the main thread: re-registering the
 *    same area (thread pointer + __rseq_offset, same length and signature)
 *    fails with EBUSY, as it did before the checkpoint (a process without
 *    rseq would get 0 and be registered now); and rseq->cpu_id follows the
 *    thread when sched_setaffinity() moves it to every allowed CPU.
 *
 * Corruptions: "rseq" (unregister rseq), "clock" (pretend time went back).
 */
#include "zdtm.h"
#include <sched.h>
#include <sys/auxv.h>
#include <sys/rseq.h>
#include <sys/time.h>

static volatile uint64_t last_mono;
static volatile int went_back;
static unsigned int reg_len;

static struct rseq *rseq_area(void)
{
	return (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

/* Try to register the current area again; returns errno (0 = it worked!). */
static int rseq_reregister(void)
{
	unsigned int lens[2] = { 32, __rseq_size };

	for (int i = 0; i < 2; i++) {
		long r = syscall(SYS_rseq, rseq_area(), lens[i], 0, RSEQ_SIG);
		if (r == 0)
			return 0;
		if (errno == EBUSY) {
			reg_len = lens[i];
			return EBUSY;
		}
	}
	return errno;
}

static unsigned long vdso_start_in_maps(void)
{
	static char maps[65536];
	char *p;

	if (zdtm_read_file("/proc/self/maps", maps, sizeof(maps)) < 0)
		return 0;
	p = strstr(maps, "[vdso]");
	if (!p)
		return 0;
	while (p > maps && p[-1] != '\n')
		p--;
	return strtoul(p, NULL, 16);
}

static int64_t diff_ms(clockid_t clk)
{
	struct timespec a, b;

	clock_gettime(clk, &a);
	syscall(SYS_clock_gettime, clk, &b);
	return ((int64_t)(b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec)) / 1000000;
}

int main(int argc, char **argv)
{
	unsigned long vdso = getauxval(AT_SYSINFO_EHDR);
	unsigned long iter = 0;
	int e;

	zdtm_init(argc, argv);
	if (!vdso)
		zdtm_fail("no AT_SYSINFO_EHDR");
	if (vdso_start_in_maps() != vdso)
		zdtm_fail("self-test: [vdso] at %#lx, auxv says %#lx", vdso_start_in_maps(), vdso);
	if (__rseq_size == 0)
		zdtm_fail("glibc did not register rseq (GLIBC_TUNABLES=glibc.pthread.rseq=0?)");
	e = rseq_reregister();
	if (e != EBUSY)
		zdtm_fail("self-test: rseq re-registration gave %s, expected EBUSY", e ? strerror(e) : "success");
	last_mono = zdtm_now_ns(CLOCK_MONOTONIC);

	zdtm_ready();
	do { /* at least once, even if SIGTERM came early */
		struct timespec ts;
		struct timeval tv;
		uint64_t m = zdtm_now_ns(CLOCK_MONOTONIC);

		if (m < last_mono)
			went_back = 1;
		last_mono = m;
		clock_gettime(CLOCK_REALTIME, &ts);
		gettimeofday(&tv, NULL);
		(void)time(NULL);
		if (++iter % 2000 == 0) {
			struct timespec s = { 0, 1000000 };
			nanosleep(&s, NULL);
		}
	} while (!zdtm_stopping());

	if (zdtm_corrupt("rseq"))
		syscall(SYS_rseq, rseq_area(), reg_len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG);
	if (zdtm_corrupt("clock"))
		last_mono += 1000000000000ull;

	{
		uint64_t m = zdtm_now_ns(CLOCK_MONOTONIC);
		ZCHECK(!went_back && m >= last_mono, "CLOCK_MONOTONIC went backwards");
	}
	ZCHECK(iter > 0, "clock loop never ran");
	{
		int64_t dm = diff_ms(CLOCK_MONOTONIC), dr = diff_ms(CLOCK_REALTIME);
		ZCHECK(dm >= 0 && dm < 50, "vDSO CLOCK_MONOTONIC is %lld ms off the syscall (stale vvar?)",
		       (long long)dm);
		ZCHECK(dr >= 0 && dr < 50, "vDSO CLOCK_REALTIME is %lld ms off the syscall (stale vvar?)",
		       (long long)dr);
	}
	{
		uint64_t m0 = zdtm_now_ns(CLOCK_MONOTONIC), r0 = zdtm_now_ns(CLOCK_REALTIME), m1, r1;
		struct timeval tv;
		time_t t;
		zdtm_sleep_ms(20);
		m1 = zdtm_now_ns(CLOCK_MONOTONIC);
		r1 = zdtm_now_ns(CLOCK_REALTIME);
		ZCHECK(m1 - m0 >= 20000000ull, "CLOCK_MONOTONIC advanced %llu ns over a 20 ms sleep",
		       (unsigned long long)(m1 - m0));
		ZCHECK(r1 - r0 >= 19000000ull, "CLOCK_REALTIME advanced %llu ns over a 20 ms sleep",
		       (unsigned long long)(r1 - r0));
		gettimeofday(&tv, NULL);
		t = time(NULL);
		ZCHECK(llabs((long long)tv.tv_sec - (long long)(r1 / 1000000000ull)) <= 1,
		       "gettimeofday disagrees with CLOCK_REALTIME");
		ZCHECK(llabs((long long)t - (long long)(r1 / 1000000000ull)) <= 1, "time() disagrees with CLOCK_REALTIME");
	}
	ZCHECK(getauxval(AT_SYSINFO_EHDR) == vdso, "AT_SYSINFO_EHDR %#lx, expected %#lx", getauxval(AT_SYSINFO_EHDR),
	       vdso);
	ZCHECK(vdso_start_in_maps() == vdso, "[vdso] at %#lx, expected %#lx", vdso_start_in_maps(), vdso);

	e = rseq_reregister();
	if (e == 0) {
		zdtm_err("rseq was not registered after restore (re-registration succeeded)");
	} else {
		cpu_set_t orig, one;
		ZCHECK(e == EBUSY, "rseq re-registration: %s, expected EBUSY (different area/len/sig?)", strerror(e));
		if (sched_getaffinity(0, sizeof(orig), &orig) == 0) {
			for (int c = 0; c < CPU_SETSIZE; c++) {
				unsigned int cpu;
				if (!CPU_ISSET(c, &orig))
					continue;
				CPU_ZERO(&one);
				CPU_SET(c, &one);
				if (sched_setaffinity(0, sizeof(one), &one) < 0)
					continue;
				sched_yield();
				cpu = ((volatile struct rseq *)rseq_area())->cpu_id;
				ZCHECK(cpu == (unsigned)c, "rseq cpu_id %d while running on CPU %d", (int)cpu, c);
			}
			sched_setaffinity(0, sizeof(orig), &orig);
		}
	}
	zdtm_finish();
}
