/*
 * maps_sparse (cf. zdtm maps01..maps11, mprotect00): a sparse address space.
 *
 * A 64 GiB PROT_NONE|MAP_NORESERVE reservation with, inside it:
 *   +0            2 pages rw-, pattern
 *   +1 GiB        rw- / --- (guard page) / rw-, pattern on both rw pages
 *   +16 GiB       1 page written, then r-x
 *   +32 GiB+4K    2 pages written, then r--
 *   +48 GiB       4 pages rw-, never touched (must read back as zeroes)
 *   +64 GiB-4K    last page rw-, pattern
 * plus a 16-page MAP_GROWSDOWN region with its top and bottom pages written.
 *
 * Verified after SIGTERM: /proc/self/maps is identical to the copy taken
 * right before `ready` (every mapping of the process, including [heap],
 * [stack], [vdso], [vvar*] placement and the binary's own mappings), after
 * zdtm_normalize_maps() merged neighbours the kernel may or may not keep
 * as separate VMAs;
 * the VmFlags of the test's regions in /proc/self/smaps are unchanged ("gd"
 * for the growsdown region, "nr" for the reservation, ...; the soft-dirty
 * flag "sd" is ignored); page contents; untouched pages are zero.
 * Nothing allocates memory between the two snapshots.
 *
 * Corruptions: "content", "prot", "unmap".
 */
#include "zdtm.h"
#include <sys/mman.h>

#define PG 4096ul
#define GB (1ul << 30)
#define RES (64 * GB)
#define MAPS_MAX (256 * 1024)

static char maps_before[MAPS_MAX], maps_after[MAPS_MAX];

struct area {
	unsigned long off, pages;
	int pattern; /* pages carrying a pattern (bitmask) */
	int zero;    /* must read as zero */
};

static const struct area areas[] = {
	{ 0, 2, 0x3, 0 },
	{ 1 * GB, 1, 0x1, 0 },
	{ 1 * GB + 2 * PG, 1, 0x1, 0 },
	{ 16 * GB, 1, 0x1, 0 },
	{ 32 * GB + PG, 2, 0x3, 0 },
	{ 48 * GB, 4, 0, 1 },
	{ RES - PG, 1, 0x1, 0 },
};
#define NAREAS (int)(sizeof(areas) / sizeof(areas[0]))

static char *res, *gd;

/* /proc/self/maps, normalised (adjacent mergeable VMAs merged) */
static void read_maps(char *out)
{
	static char raw[MAPS_MAX];

	if (zdtm_read_file("/proc/self/maps", raw, sizeof(raw)) < 0)
		zdtm_fail("read maps: %s", strerror(errno));
	zdtm_normalize_maps(raw, out, MAPS_MAX);
}
#define GD_PAGES 16

static char flags_before[NAREAS + 2][128];

static void all_flags(char out[][128])
{
	for (int i = 0; i < NAREAS; i++)
		zdtm_vmflags((unsigned long)res + areas[i].off, out[i], 128);
	zdtm_vmflags((unsigned long)res + PG * 2, out[NAREAS], 128); /* reservation remainder */
	zdtm_vmflags((unsigned long)gd, out[NAREAS + 1], 128);
}

int main(int argc, char **argv)
{
	static char flags_after[NAREAS + 2][128];

	zdtm_init(argc, argv);

	res = mmap(NULL, RES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		zdtm_fail("mmap 64 GiB: %s", strerror(errno));
	for (int i = 0; i < NAREAS; i++) {
		const struct area *a = &areas[i];
		char *p = res + a->off;
		if (mprotect(p, a->pages * PG, PROT_READ | PROT_WRITE) < 0)
			zdtm_fail("mprotect: %s", strerror(errno));
		for (unsigned long pg = 0; pg < a->pages; pg++)
			if (a->pattern & (1 << pg))
				zdtm_fill(p + pg * PG, PG, 0x3a900000 + i, pg * PG);
	}
	mprotect(res + 16 * GB, PG, PROT_READ | PROT_EXEC);
	mprotect(res + 32 * GB + PG, 2 * PG, PROT_READ);

	gd = mmap(NULL, GD_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0);
	if (gd == MAP_FAILED)
		zdtm_fail("mmap growsdown: %s", strerror(errno));
	zdtm_fill(gd + (GD_PAGES - 1) * PG, PG, 0x3a9000ff, 0);
	zdtm_fill(gd, PG, 0x3a9000fe, 0);

	all_flags(flags_before);
	if (!strstr(flags_before[NAREAS + 1], "gd"))
		zdtm_fail("self-test: growsdown region has VmFlags '%s'", flags_before[NAREAS + 1]);
	read_maps(maps_before);

	zdtm_ready();
	zdtm_wait();

	read_maps(maps_after);

	if (zdtm_corrupt("content"))
		res[1 * GB + 2 * PG + 100] ^= 1;
	if (zdtm_corrupt("prot"))
		mprotect(res + RES - PG, PG, PROT_READ);
	if (zdtm_corrupt("unmap"))
		munmap(res + 40 * GB, PG);
	if (zdtm_corrupt("prot") || zdtm_corrupt("unmap"))
		read_maps(maps_after);

	zdtm_compare_text("/proc/self/maps", maps_before, maps_after);

	all_flags(flags_after);
	for (int i = 0; i < NAREAS + 2; i++)
		ZCHECK(strcmp(flags_before[i], flags_after[i]) == 0, "region %d VmFlags '%s', expected '%s'", i,
		       flags_after[i], flags_before[i]);

	for (int i = 0; i < NAREAS; i++) {
		const struct area *a = &areas[i];
		char *p = res + a->off;
		for (unsigned long pg = 0; pg < a->pages; pg++) {
			if (a->pattern & (1 << pg)) {
				long bad = zdtm_check_pat(p + pg * PG, PG, 0x3a900000 + i, pg * PG);
				ZCHECK(bad < 0, "area +%#lx page %lu differs at %ld", a->off, pg, bad);
			}
			if (a->zero)
				for (unsigned long j = 0; j < PG; j++)
					if (p[pg * PG + j]) {
						zdtm_err("untouched page +%#lx is not zero", a->off + pg * PG);
						break;
					}
		}
	}
	ZCHECK(zdtm_check_pat(gd + (GD_PAGES - 1) * PG, PG, 0x3a9000ff, 0) < 0, "growsdown top page differs");
	ZCHECK(zdtm_check_pat(gd, PG, 0x3a9000fe, 0) < 0, "growsdown bottom page differs");
	zdtm_finish();
}
