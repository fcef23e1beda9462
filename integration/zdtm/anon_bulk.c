/*
 * anon_bulk: the bulk of a real workload's memory, private and anonymous.
 *
 * A restore fills private anonymous writable memory with UFFDIO_COPY,
 * through a userfaultfd it creates inside the process and takes away
 * again, and fills other memory with process_vm_writev or /proc/pid/mem.
 * The test holds one region of each kind:
 *   A  24 MiB rw-, pattern, every 8th page never touched (a hole);
 *   B   8 MiB rw- with MADV_HUGEPAGE (filled so that THP stays possible);
 *   C   6 MiB written, then made r-- (still charged to the commit limit:
 *      VmFlags "ac", which the restore must keep);
 * and a second thread that writes to A while the process runs (it must
 * still run after restore).
 *
 * Verified after SIGTERM:
 *  - the patterns of A, B and C; A's holes read as zero;
 *  - /proc/self/maps (normalised) and the VmFlags of A, B and C are
 *    unchanged: no "um"/"uw" userfaultfd flag is left on any region;
 *  - no fd of the process is a userfaultfd;
 *  - the process can register A with a userfaultfd of its own (EBUSY if
 *    another one still held it), and after unregistering, a write to one of
 *    A's holes works.
 *
 * Corruptions: "content" (one byte of A), "uffd" (a registration of our own
 * left on A's first pages).
 */
#include "zdtm.h"
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#define PG 4096ul
#define MB (1ul << 20)
#define A_LEN (24 * MB)
#define B_LEN (8 * MB)
#define C_LEN (6 * MB)
#define MAPS_MAX (256 * 1024)
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

static char maps_before[MAPS_MAX], maps_after[MAPS_MAX];
static char *a, *b, *c;
static volatile unsigned long ticks;
static volatile int stop_writer;

static int hole(unsigned long pg)
{
	return pg % 8 == 7;
}

/* A's pages but the holes get the pattern; the writer thread owns the
 * first 8 bytes of page 0, which it keeps setting to the tick count. */
static void fill_a(void)
{
	for (unsigned long pg = 0; pg < A_LEN / PG; pg++)
		if (!hole(pg))
			zdtm_fill(a + pg * PG, PG, 0xa0000001, pg * PG);
}

static void *writer(void *arg)
{
	(void)arg;
	while (!stop_writer) {
		ticks++;
		memcpy(a + PG, (const void *)&ticks, sizeof(ticks));
		zdtm_sleep_ms(1);
	}
	return NULL;
}

static void read_maps(char *out)
{
	static char raw[MAPS_MAX];

	if (zdtm_read_file("/proc/self/maps", raw, sizeof(raw)) < 0)
		zdtm_fail("read maps: %s", strerror(errno));
	zdtm_normalize_maps(raw, out, MAPS_MAX);
}

static int uffd_open(void)
{
	int fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	struct uffdio_api api = { .api = UFFD_API };

	if (fd < 0 || ioctl(fd, UFFDIO_API, &api) < 0)
		return -1;
	return fd;
}

static int uffd_register(int fd, void *at, size_t len)
{
	struct uffdio_register r = { .range = { (unsigned long)at, len }, .mode = UFFDIO_REGISTER_MODE_MISSING };

	return ioctl(fd, UFFDIO_REGISTER, &r);
}

/* 1 if some fd of ours is a userfaultfd. */
static int has_uffd_fd(void)
{
	char path[64], link[128];

	for (int fd = 0; fd < 1024; fd++) {
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		if (strstr(link, "userfaultfd"))
			return 1;
	}
	return 0;
}

static void check_flags(const char *name, const char *before, const char *after)
{
	ZCHECK(strcmp(before, after) == 0, "VmFlags of %s: before '%s', after '%s'", name, before, after);
	ZCHECK(!strstr(after, " um") && !strstr(after, " uw"), "%s is still registered with a userfaultfd: '%s'", name,
	       after);
}

int main(int argc, char **argv)
{
	char fa[128], fb[128], fc[128], fa2[128], fb2[128], fc2[128];
	unsigned long t0;
	pthread_t th;
	long bad;
	int fd;

	zdtm_init(argc, argv);

	a = mmap(NULL, A_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	b = mmap(NULL, B_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	c = mmap(NULL, C_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || b == MAP_FAILED || c == MAP_FAILED)
		zdtm_fail("mmap: %s", strerror(errno));
	if (madvise(b, B_LEN, MADV_HUGEPAGE) < 0)
		zdtm_fail("madvise(MADV_HUGEPAGE): %s", strerror(errno));
	fill_a();
	zdtm_fill(b, B_LEN, 0xb0000002, 0);
	zdtm_fill(c, C_LEN, 0xc0000003, 0);
	if (mprotect(c, C_LEN, PROT_READ) < 0)
		zdtm_fail("mprotect: %s", strerror(errno));
	if (pthread_create(&th, NULL, writer, NULL))
		zdtm_fail("pthread_create");

	zdtm_vmflags((unsigned long)a, fa, sizeof(fa));
	zdtm_vmflags((unsigned long)b, fb, sizeof(fb));
	zdtm_vmflags((unsigned long)c, fc, sizeof(fc));
	read_maps(maps_before);
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("content"))
		a[5 * PG + 17] ^= 0x40;
	if (zdtm_corrupt("uffd")) {
		fd = uffd_open();
		/* Pages 0-6 only: all present, so no check below faults on them. */
		if (fd < 0 || uffd_register(fd, a, 7 * PG) < 0)
			zdtm_fail("corrupt uffd: %s", strerror(errno));
	}
	t0 = ticks;
	zdtm_sleep_ms(50);
	ZCHECK(ticks > t0, "the writer thread does not run (ticks %lu)", t0);
	stop_writer = 1;
	pthread_join(th, NULL);
	zdtm_fill(a + PG, sizeof(ticks), 0xa0000001, PG);

	for (unsigned long pg = 0; pg < A_LEN / PG; pg++) {
		if (hole(pg)) {
			for (unsigned long i = 0; i < PG; i++)
				if (a[pg * PG + i]) {
					zdtm_err("hole page %lu of A is not zero at %lu", pg, i);
					break;
				}
			continue;
		}
		bad = zdtm_check_pat(a + pg * PG, PG, 0xa0000001, pg * PG);
		if (bad >= 0) {
			zdtm_err("A differs at page %lu byte %ld", pg, bad);
			break;
		}
	}
	bad = zdtm_check_pat(b, B_LEN, 0xb0000002, 0);
	ZCHECK(bad < 0, "B (MADV_HUGEPAGE) differs at %ld", bad);
	bad = zdtm_check_pat(c, C_LEN, 0xc0000003, 0);
	ZCHECK(bad < 0, "C (read-only) differs at %ld", bad);

	zdtm_vmflags((unsigned long)a, fa2, sizeof(fa2));
	zdtm_vmflags((unsigned long)b, fb2, sizeof(fb2));
	zdtm_vmflags((unsigned long)c, fc2, sizeof(fc2));
	check_flags("A", fa, fa2);
	check_flags("B", fb, fb2);
	check_flags("C", fc, fc2);
	read_maps(maps_after);
	zdtm_compare_text("maps", maps_before, maps_after);
	ZCHECK(!has_uffd_fd(), "the process holds a userfaultfd it did not open");

	/* Only if nothing is left registered: else a fault could wait forever. */
	if (zdtm_errors() == 0) {
		fd = uffd_open();
		ZCHECK(fd >= 0, "userfaultfd: %s", strerror(errno));
		if (fd >= 0) {
			ZCHECK(uffd_register(fd, a, A_LEN) == 0, "register A with our own userfaultfd: %s",
			       strerror(errno));
			close(fd);
		}
		a[7 * PG] = 1;
		ZCHECK(a[7 * PG] == 1, "write to a hole of A");
	}
	zdtm_finish();
}
