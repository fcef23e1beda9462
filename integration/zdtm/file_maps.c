/*
 * file_maps (cf. zdtm maps04/05, mmx00, file_shared): file-backed mappings.
 *
 * Files in the state dir, created with known patterns:
 *   fm.private 16 pages: MAP_PRIVATE rw-; pages 3 and 7 written (COW), page
 *              0 only read, the rest never touched.
 *   fm.shared  16 pages: MAP_SHARED rw-; pages 2 and 5 written through the
 *              mapping before the checkpoint.
 *   fm.ro       8 pages: MAP_PRIVATE r-- of the whole file, and MAP_SHARED
 *              r-- of pages 4..7 (file offset 16 KiB).
 * The fds are closed after mmap (the mappings alone keep the files).
 *
 * Verified after SIGTERM: the /proc/self/maps lines of these mappings are
 * unchanged (range, prot, flags p/s, offset, dev, inode, path); the private
 * mapping shows the COW'd pages, other pages equal the file, and the file
 * itself never saw the private writes; the shared mapping shows the writes
 * and so does the file (pread); a new write through the shared mapping
 * reaches the file (it is really MAP_SHARED of that file, not a copy); the
 * read-only mappings match the file.  That last write is undone right away,
 * so the files on disk are identical before and after a verification (the
 * leave-running mode verifies the original before restoring the image).
 *
 * Corruptions: "private" (flip a COW'd byte), "shared_copy" (replace the
 * shared mapping by an anonymous copy of itself).
 */
#include "zdtm.h"
#include <sys/mman.h>

#define PG 4096
#define MAPS_MAX 65536

static char *priv, *shr, *ro, *ro_off;
static char lines_before[4][256], lines_after[4][256];
static char buf[16 * PG];

static void create(const char *name, int pages, uint32_t seed)
{
	int fd = open(zdtm_path(name), O_RDWR | O_CREAT | O_TRUNC, 0644);

	if (fd < 0)
		zdtm_fail("create %s: %s", name, strerror(errno));
	zdtm_fill(buf, pages * PG, seed, 0);
	if (zdtm_write_all(fd, buf, pages * PG) < 0)
		zdtm_fail("write %s: %s", name, strerror(errno));
	close(fd);
}

static char *map(const char *name, int pages, int prot, int flags, off_t off)
{
	int fd = open(zdtm_path(name), (prot & PROT_WRITE) && (flags & MAP_SHARED) ? O_RDWR : O_RDONLY);
	char *p;

	if (fd < 0)
		zdtm_fail("open %s: %s", name, strerror(errno));
	p = mmap(NULL, pages * PG, prot, flags, fd, off);
	if (p == MAP_FAILED)
		zdtm_fail("mmap %s: %s", name, strerror(errno));
	close(fd);
	return p;
}

static void find_lines(char out[4][256])
{
	static char maps[MAPS_MAX];
	char *addrs[4] = { priv, shr, ro, ro_off };

	zdtm_read_file("/proc/self/maps", maps, sizeof(maps));
	for (int i = 0; i < 4; i++) {
		char key[32], *p;
		int kl = snprintf(key, sizeof(key), "%lx-", (unsigned long)addrs[i]);
		out[i][0] = 0;
		for (p = maps; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
			if (strncmp(p, key, kl) == 0) {
				snprintf(out[i], 256, "%.*s", (int)strcspn(p, "\n"), p);
				break;
			}
	}
}

static void pread_file(const char *name, size_t len)
{
	int fd = open(zdtm_path(name), O_RDONLY);

	memset(buf, 0, sizeof(buf));
	if (fd < 0 || pread(fd, buf, len, 0) != (ssize_t)len)
		zdtm_err("read %s: %s", name, strerror(errno));
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	volatile char sink;
	long bad;

	zdtm_init(argc, argv);
	create("fm.private", 16, 0xf11e0001);
	create("fm.shared", 16, 0xf11e0002);
	create("fm.ro", 8, 0xf11e0003);

	priv = map("fm.private", 16, PROT_READ | PROT_WRITE, MAP_PRIVATE, 0);
	shr = map("fm.shared", 16, PROT_READ | PROT_WRITE, MAP_SHARED, 0);
	ro = map("fm.ro", 8, PROT_READ, MAP_PRIVATE, 0);
	ro_off = map("fm.ro", 4, PROT_READ, MAP_SHARED, 4 * PG);

	zdtm_fill(priv + 3 * PG, PG, 0xbeef0003, 0);
	zdtm_fill(priv + 7 * PG + 100, 200, 0xbeef0007, 0);
	sink = priv[0];
	(void)sink;
	zdtm_fill(shr + 2 * PG, PG, 0xbeef1002, 0);
	zdtm_fill(shr + 5 * PG + 1000, 3000, 0xbeef1005, 0);

	find_lines(lines_before);
	for (int i = 0; i < 4; i++)
		if (!lines_before[i][0])
			zdtm_fail("self-test: mapping %d not in /proc/self/maps", i);

	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("private"))
		priv[3 * PG + 10] ^= 1;
	if (zdtm_corrupt("shared_copy")) {
		char *copy = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		memcpy(copy, shr, 16 * PG);
		mremap(copy, 16 * PG, 16 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, shr);
	}

	find_lines(lines_after);
	for (int i = 0; i < 4; i++)
		ZCHECK(strcmp(lines_before[i], lines_after[i]) == 0, "mapping %d: '%s', expected '%s'", i,
		       lines_after[i], lines_before[i]);

	/* private mapping: COW'd pages, other pages from the file */
	for (int pg = 0; pg < 16; pg++) {
		if (pg == 3) {
			bad = zdtm_check_pat(priv + 3 * PG, PG, 0xbeef0003, 0);
		} else if (pg == 7) {
			bad = zdtm_check_pat(priv + 7 * PG, 100, 0xf11e0001, 7 * PG);
			if (bad < 0)
				bad = zdtm_check_pat(priv + 7 * PG + 100, 200, 0xbeef0007, 0);
			if (bad < 0)
				bad = zdtm_check_pat(priv + 7 * PG + 300, PG - 300, 0xf11e0001, 7 * PG + 300);
		} else {
			bad = zdtm_check_pat(priv + pg * PG, PG, 0xf11e0001, pg * PG);
		}
		ZCHECK(bad < 0, "private mapping page %d differs", pg);
	}
	pread_file("fm.private", 16 * PG);
	bad = zdtm_check_pat(buf, 16 * PG, 0xf11e0001, 0);
	ZCHECK(bad < 0, "fm.private changed on disk at %ld (private writes leaked)", bad);

	/* shared mapping and its file */
	for (int pass = 0; pass < 2; pass++) {
		const char *src = pass ? buf : shr;
		if (pass)
			pread_file("fm.shared", 16 * PG);
		for (int pg = 0; pg < 16; pg++) {
			const char *p = src + pg * PG;
			if (pg == 2)
				bad = zdtm_check_pat(p, PG, 0xbeef1002, 0);
			else if (pg == 5) {
				bad = zdtm_check_pat(p, 1000, 0xf11e0002, 5 * PG);
				if (bad < 0)
					bad = zdtm_check_pat(p + 1000, 3000, 0xbeef1005, 0);
				if (bad < 0)
					bad = zdtm_check_pat(p + 4000, PG - 4000, 0xf11e0002, 5 * PG + 4000);
			} else
				bad = zdtm_check_pat(p, PG, 0xf11e0002, pg * PG);
			ZCHECK(bad < 0, "%s page %d differs", pass ? "fm.shared file" : "shared mapping", pg);
		}
	}
	{
		char orig = shr[9 * PG + 9], now = 0;
		int fd = open(zdtm_path("fm.shared"), O_RDONLY);
		shr[9 * PG + 9] = (char)~orig;
		if (fd < 0 || pread(fd, &now, 1, 9 * PG + 9) != 1)
			zdtm_err("pread fm.shared: %s", strerror(errno));
		ZCHECK(now == (char)~orig, "a write to the MAP_SHARED mapping did not reach the file");
		shr[9 * PG + 9] = orig;
		msync(shr, 16 * PG, MS_SYNC);
		if (fd >= 0)
			close(fd);
	}

	/* read-only mappings */
	bad = zdtm_check_pat(ro, 8 * PG, 0xf11e0003, 0);
	ZCHECK(bad < 0, "read-only private mapping differs at %ld", bad);
	bad = zdtm_check_pat(ro_off, 4 * PG, 0xf11e0003, 4 * PG);
	ZCHECK(bad < 0, "read-only shared mapping (offset 16 KiB) differs at %ld", bad);
	zdtm_finish();
}
