/*
 * static_loop: the simplest test (static binary).
 *
 * A counter lives in a local variable (kept in a register or on the stack by
 * the compiler) and is mirrored into a global after every increment; the loop
 * sleeps 1 ms per iteration (nanosleep, so the checkpoint usually interrupts
 * a syscall that must be restarted or return EINTR; both are handled).
 * A 1 MiB heap buffer (mmap'ed by malloc) and a 2 KiB one (brk) carry a
 * pattern.
 *
 * Verified after SIGTERM: getpid()/getppid() equal the values recorded at
 * start (pid 1 / ppid 0 when started as the init of a pid namespace), both
 * buffers hold their pattern, the local counter equals its global mirror and
 * it advanced after the checkpoint (the harness checkpoints after `ready`).
 *
 * Corruptions: "pattern" flips a heap byte, "counter" desynchronises the
 * mirror, "pid" pretends getpid() changed.
 */
#include "zdtm.h"

#define BIG (1u << 20)
#define SMALL 2048

static volatile unsigned long mirror;

int main(int argc, char **argv)
{
	unsigned long counter = 0, at_ready;
	pid_t pid, ppid;
	unsigned char *big, *small;
	long bad;

	zdtm_init(argc, argv);
	pid = getpid();
	ppid = getppid();

	big = malloc(BIG);
	small = malloc(SMALL);
	if (!big || !small)
		zdtm_fail("malloc failed");
	zdtm_fill(big, BIG, 0x5eed0001, 0);
	zdtm_fill(small, SMALL, 0x5eed0002, 0);

	for (int i = 0; i < 10; i++) {
		counter++;
		mirror = counter;
	}
	at_ready = counter;
	zdtm_ready();

	do { /* at least once, even if SIGTERM came early */
		struct timespec ts = { 0, 1000000 };
		counter++;
		mirror = counter;
		nanosleep(&ts, NULL); /* EINTR is fine */
	} while (!zdtm_stopping());

	if (zdtm_corrupt("pattern"))
		big[BIG / 2] ^= 0x40;
	if (zdtm_corrupt("counter"))
		mirror = counter + 1;
	if (zdtm_corrupt("pid"))
		pid = pid + 1;

	ZCHECK(getpid() == pid, "getpid() = %d, expected %d", (int)getpid(), (int)pid);
	ZCHECK(getppid() == ppid, "getppid() = %d, expected %d", (int)getppid(), (int)ppid);
	ZCHECK(zdtm_gettid() == pid, "gettid() = %d, expected %d", (int)zdtm_gettid(), (int)pid);
	bad = zdtm_check_pat(big, BIG, 0x5eed0001, 0);
	ZCHECK(bad < 0, "1 MiB heap buffer differs at offset %ld", bad);
	bad = zdtm_check_pat(small, SMALL, 0x5eed0002, 0);
	ZCHECK(bad < 0, "2 KiB heap buffer differs at offset %ld", bad);
	ZCHECK(counter == mirror, "local counter %lu != global mirror %lu", counter, (unsigned long)mirror);
	ZCHECK(counter > at_ready, "counter %lu did not advance past %lu", counter, at_ready);

	/* the loop must keep working after restore */
	for (int i = 0; i < 3; i++) {
		counter++;
		mirror = counter;
		zdtm_sleep_ms(1);
	}
	ZCHECK(counter == mirror, "counter broken after wake-up");
	free(small);
	free(big);
	zdtm_finish();
}
