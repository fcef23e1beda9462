/*
 * bigmem (tests/faults.rs): a lot of private memory, so that a dump spends
 * long enough copying pages to be killed in the middle of it.
 *
 * <dir>/mib (optional, default 1024) gives the size in MiB of one private
 * anonymous mapping filled with a pattern (one 64-bit word per 8 bytes).
 * A second thread increments a counter every millisecond (checked to have
 * advanced after `ready`, so the process demonstrably ran on after the
 * interrupted dump); the main thread sleeps in zdtm_wait().
 *
 * Verified after SIGTERM: every word of the mapping, the counter advanced,
 * getpid() is still 1.
 *
 * Corruptions: "pattern" flips one word, "counter" freezes the counter.
 */
#include "zdtm.h"
#include <pthread.h>
#include <sys/mman.h>

static volatile unsigned long counter;
static volatile int freeze_counter;

static uint64_t word(uint64_t i)
{
	uint64_t z = i + 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void *ticker(void *arg)
{
	(void)arg;
	for (;;) {
		if (!freeze_counter)
			counter++;
		zdtm_sleep_ms(1);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	char buf[64];
	size_t mib = 1024, n, i, bad = 0, first_bad = 0;
	uint64_t *m;
	unsigned long at_ready;
	pthread_t t;
	pid_t pid;

	zdtm_init(argc, argv);
	pid = getpid();
	if (zdtm_read_file(zdtm_path("mib"), buf, sizeof(buf)) > 0)
		mib = strtoul(buf, NULL, 10);
	n = mib * 1024 * 1024 / 8;
	m = mmap(NULL, n * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		zdtm_fail("mmap %zu MiB: %s", mib, strerror(errno));
	for (i = 0; i < n; i++)
		m[i] = word(i);
	if (pthread_create(&t, NULL, ticker, NULL))
		zdtm_fail("pthread_create failed");
	while (counter == 0)
		zdtm_sleep_ms(1);
	at_ready = counter;
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("pattern"))
		m[n / 2] ^= 1;
	if (zdtm_corrupt("counter")) {
		freeze_counter = 1;
		zdtm_sleep_ms(5);
		at_ready = counter;
	}
	for (i = 0; i < n; i++)
		if (m[i] != word(i) && bad++ == 0)
			first_bad = i;
	ZCHECK(bad == 0, "%zu of %zu words differ, the first at offset %#zx", bad, n, first_bad * 8);
	/* the ticker runs every millisecond: give it a few */
	for (i = 0; i < 200 && counter <= at_ready; i++)
		zdtm_sleep_ms(1);
	ZCHECK(counter > at_ready, "the ticker thread did not run after ready (%lu)", counter);
	ZCHECK(getpid() == pid, "pid changed from %d to %d", (int)pid, (int)getpid());
	zdtm_finish();
}
