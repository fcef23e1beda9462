/*
 * brk_heap (cf. zdtm brk00, mm layout checks): the brk heap and the mm
 * layout values the kernel keeps for a process.
 *
 * The test never calls malloc (zdtm.h does not either), so the brk area is
 * its own: sbrk(+1 MiB) and brk(+256 KiB) with patterns, then a grow of
 * 64 KiB and a shrink that leaves the break at a non-page-aligned address.
 *
 * Verified after SIGTERM:
 *  - the kernel's break (raw brk(0) syscall; glibc's sbrk(0) only returns
 *    its cached copy, checked too) equals the recorded unaligned value;
 *  - both regions hold their pattern; the [heap] line of /proc/self/maps
 *    is unchanged;
 *  - the break can still grow (sbrk(+512 KiB) returns the old break, the
 *    new pages are zero and writable) and shrink back;
 *  - /proc/self/stat start_code, end_code, start_stack, start_data,
 *    end_data, start_brk, arg_start, arg_end, env_start, env_end are
 *    unchanged, and /proc/self/cmdline, /proc/self/environ, /proc/self/auxv
 *    and the /proc/self/exe link read back identically (these depend on the
 *    mm fields a restore has to set with prctl(PR_SET_MM_MAP)).
 *
 * Corruptions: "brk" (move the break), "pattern".
 */
#include "zdtm.h"
#include <sys/mman.h>

#define G1 (1ul << 20)
#define G2 (256ul << 10)
#define TAIL 123

static char stat_before[4096], stat_after[4096];
static char cmd_before[4096], cmd_after[4096], env_before[65536], env_after[65536];
static char auxv_before[4096], auxv_after[4096], exe_before[4096], exe_after[4096];
static ssize_t cmd_len, env_len, auxv_len;

static unsigned long kbrk(void)
{
	return (unsigned long)syscall(SYS_brk, 0);
}

/* Fields 26-28 and 45-51 of /proc/self/stat as one string. */
static void mm_fields(char *out, size_t n)
{
	static char st[4096];
	char *p, *save = NULL, *tok;
	int field = 2;
	size_t off = 0;

	out[0] = 0;
	if (zdtm_read_file("/proc/self/stat", st, sizeof(st)) < 0)
		return;
	p = strrchr(st, ')');
	if (!p)
		return;
	for (tok = strtok_r(p + 1, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
		field++;
		if ((field >= 26 && field <= 28) || (field >= 45 && field <= 51))
			off += snprintf(out + off, n - off, "%d=%s ", field, tok);
	}
}

static ssize_t read_bin(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY);
	ssize_t off = 0, r;

	if (fd < 0)
		return -1;
	while ((r = read(fd, buf + off, n - off)) > 0)
		off += r;
	close(fd);
	return off;
}

static void heap_line(char *out, size_t n)
{
	static char maps[65536];
	char *p;

	out[0] = 0;
	zdtm_read_file("/proc/self/maps", maps, sizeof(maps));
	p = strstr(maps, "[heap]");
	if (!p)
		return;
	while (p > maps && p[-1] != '\n')
		p--;
	snprintf(out, n, "%.*s", (int)strcspn(p, "\n"), p);
}

int main(int argc, char **argv)
{
	char heap_before[256], heap_after[256];
	char *r1, *r2, *grow;
	unsigned long brk_end, pgend;
	ssize_t l;
	long bad;

	zdtm_init(argc, argv);

	r1 = sbrk(G1);
	if (r1 == (void *)-1)
		zdtm_fail("sbrk: %s", strerror(errno));
	zdtm_fill(r1, G1, 0xb0000001, 0);
	r2 = r1 + G1;
	if (brk(r2 + G2) < 0)
		zdtm_fail("brk: %s", strerror(errno));
	zdtm_fill(r2, G2, 0xb0000002, 0);
	if (sbrk(65536) == (void *)-1 || sbrk(-65536 + TAIL) == (void *)-1)
		zdtm_fail("sbrk grow/shrink: %s", strerror(errno));
	brk_end = (unsigned long)sbrk(0);
	if (brk_end != (unsigned long)r2 + G2 + TAIL || kbrk() != brk_end)
		zdtm_fail("self-test: break %#lx / kernel %#lx, expected %#lx", brk_end, kbrk(),
			  (unsigned long)r2 + G2 + TAIL);

	mm_fields(stat_before, sizeof(stat_before));
	cmd_len = read_bin("/proc/self/cmdline", cmd_before, sizeof(cmd_before));
	env_len = read_bin("/proc/self/environ", env_before, sizeof(env_before));
	auxv_len = read_bin("/proc/self/auxv", auxv_before, sizeof(auxv_before));
	if (readlink("/proc/self/exe", exe_before, sizeof(exe_before) - 1) < 0)
		zdtm_fail("readlink exe: %s", strerror(errno));
	heap_line(heap_before, sizeof(heap_before));
	if (!heap_before[0] || cmd_len <= 0 || auxv_len <= 0)
		zdtm_fail("self-test: no [heap], cmdline or auxv");

	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("brk"))
		syscall(SYS_brk, brk_end + 8192);
	if (zdtm_corrupt("pattern"))
		r2[G2 - 1] ^= 1;

	ZCHECK(kbrk() == brk_end, "kernel break %#lx, expected %#lx", kbrk(), brk_end);
	ZCHECK((unsigned long)sbrk(0) == brk_end, "sbrk(0) %p, expected %#lx", sbrk(0), brk_end);
	heap_line(heap_after, sizeof(heap_after));
	ZCHECK(strcmp(heap_before, heap_after) == 0, "[heap] '%s', expected '%s'", heap_after, heap_before);
	bad = zdtm_check_pat(r1, G1, 0xb0000001, 0);
	ZCHECK(bad < 0, "sbrk region differs at %ld", bad);
	bad = zdtm_check_pat(r2, G2, 0xb0000002, 0);
	ZCHECK(bad < 0, "brk region differs at %ld", bad);

	mm_fields(stat_after, sizeof(stat_after));
	ZCHECK(strcmp(stat_before, stat_after) == 0, "/proc/self/stat mm fields '%s', expected '%s'", stat_after,
	       stat_before);
	l = read_bin("/proc/self/cmdline", cmd_after, sizeof(cmd_after));
	ZCHECK(l == cmd_len && memcmp(cmd_before, cmd_after, l) == 0, "/proc/self/cmdline changed");
	l = read_bin("/proc/self/environ", env_after, sizeof(env_after));
	ZCHECK(l == env_len && memcmp(env_before, env_after, l) == 0, "/proc/self/environ changed");
	l = read_bin("/proc/self/auxv", auxv_after, sizeof(auxv_after));
	ZCHECK(l == auxv_len && memcmp(auxv_before, auxv_after, l) == 0, "/proc/self/auxv changed");
	l = readlink("/proc/self/exe", exe_after, sizeof(exe_after) - 1);
	ZCHECK(l > 0 && strcmp(exe_before, exe_after) == 0, "/proc/self/exe is '%s', expected '%s'", exe_after,
	       exe_before);

	/* the heap can still grow and shrink */
	grow = sbrk(512 << 10);
	if (grow == (void *)-1) {
		zdtm_err("sbrk(+512 KiB) after restore: %s", strerror(errno));
	} else {
		ZCHECK((unsigned long)grow == brk_end, "sbrk returned %p, expected %#lx", grow, brk_end);
		ZCHECK(kbrk() == brk_end + (512 << 10), "kernel break did not move");
		pgend = (brk_end + 4095) & ~4095ul;
		for (unsigned long a = pgend; a < brk_end + (512 << 10); a++)
			if (*(char *)a) {
				zdtm_err("new heap memory at %#lx is not zero", a);
				break;
			}
		memset((char *)pgend, 0x5a, brk_end + (512 << 10) - pgend);
		ZCHECK(sbrk(-(512 << 10)) != (void *)-1 && kbrk() == brk_end, "cannot shrink the heap back");
	}
	zdtm_finish();
}
