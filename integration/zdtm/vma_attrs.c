/*
 * vma_attrs (cf. zdtm mlock_setuid): memory locks.
 *
 * State built before the checkpoint:
 *  - A: 64 KiB of anonymous memory with a pattern, mlock()ed;
 *  - B: 1 MiB locked with mlock2(MLOCK_ONFAULT), only its first two pages
 *    touched;
 *  - C: 32 KiB, read-only, not locked.
 *
 * Verified after SIGTERM, from /proc/self/smaps: A has VmFlags "lo" and
 * all 64 KiB Locked, its pattern intact; B has "lo" and "lf" and only its
 * two touched pages resident (a plain mlock would have faulted in all of
 * it); C is not locked.
 *
 * Corruptions: "unlock" (A unlocked), "lockall" (C locked too).
 */
#include "zdtm.h"
#include <sys/mman.h>
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

/* The smaps entry of the VMA starting at `start`: its header line, VmFlags
 * line and the kB values of Rss and Locked. */
struct entry {
	char header[256], flags[256];
	long rss, locked;
};

static int find(void *start, struct entry *e)
{
	static char text[1 << 20];
	char want[32], *line, *save = NULL;
	int in = 0;

	memset(e, 0, sizeof(*e));
	snprintf(want, sizeof(want), "%lx-", (unsigned long)start);
	if (zdtm_read_file("/proc/self/smaps", text, sizeof(text)) < 0)
		return -1;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, want, strlen(want))) {
			in = 1;
			snprintf(e->header, sizeof(e->header), "%s", line);
		} else if (in && !strncmp(line, "Rss:", 4)) {
			e->rss = atol(line + 4);
		} else if (in && !strncmp(line, "Locked:", 7)) {
			e->locked = atol(line + 7);
		} else if (in && !strncmp(line, "VmFlags:", 8)) {
			snprintf(e->flags, sizeof(e->flags), "%s ", line + 8);
			return 0;
		}
	}
	return -1;
}

static int has(const struct entry *e, const char *flag)
{
	char f[8];

	snprintf(f, sizeof(f), " %s ", flag);
	return strstr(e->flags, f) != NULL;
}

int main(int argc, char **argv)
{
	size_t la = 64 << 10, lb = 1 << 20, lc = 32 << 10;
	char *a, *b, *c;
	struct entry e;

	zdtm_init(argc, argv);
	a = mmap(NULL, la, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	b = mmap(NULL, lb, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	c = mmap(NULL, lc, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || b == MAP_FAILED || c == MAP_FAILED)
		zdtm_fail("mmap: %s", strerror(errno));
	/* Different protections keep the kernel from merging them. */
	if (mprotect(c, lc, PROT_READ))
		zdtm_fail("mprotect: %s", strerror(errno));
	zdtm_fill(a, la, 3, 0);
	b[0] = 1;
	b[4096] = 2;
	if (mlock(a, la) || syscall(SYS_mlock2, b, lb, MLOCK_ONFAULT))
		zdtm_fail("lock: %s", strerror(errno));
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("unlock"))
		munlock(a, la);
	if (zdtm_corrupt("lockall"))
		mlock(c, lc);

	ZCHECK(!find(a, &e) && has(&e, "lo") && e.locked == 64, "A: flags%s, %ld kB locked", e.flags, e.locked);
	ZCHECK(zdtm_check_pat(a, la, 3, 0) < 0, "A: pattern changed at %ld", zdtm_check_pat(a, la, 3, 0));
	ZCHECK(!find(b, &e) && has(&e, "lo") && has(&e, "lf") && e.rss == 8, "B: flags%s, %ld kB resident", e.flags, e.rss);
	ZCHECK(!find(c, &e) && !has(&e, "lo") && e.locked == 0, "C: flags%s, %ld kB locked", e.flags, e.locked);
	zdtm_finish();
}
