/*
 * shm_kinds (cf. zdtm shm, maps00, memfd00, sysv shm tests): shared memory
 * of three kinds, each shared between the root and a forked child:
 *   anon   MAP_SHARED|MAP_ANONYMOUS, 4 pages
 *   memfd  memfd_create("zdtm"), 4 pages, MAP_SHARED; the fd stays open
 *   sysv   shmget(IPC_PRIVATE, 4 pages) + shmat, marked IPC_RMID right away
 *          (so nothing leaks; the segment lives while attached).
 *
 * Before the checkpoint both processes see the pattern and each other's
 * first markers (root writes at page 1, child at page 2).
 *
 * After SIGTERM (forwarded by the root to the child) each process checks the
 * pattern and both old markers, writes a new marker (root at page 3 offset
 * 0, child at page 3 offset 64) and waits up to 3 s to see the other one's,
 * in all three regions: this proves each region is still ONE object shared
 * by both processes, not two private copies.  The memfd content read with
 * pread() on the fd must equal the mapping (fd and mapping are the same
 * object).  The /proc/self/maps lines of the regions must be unchanged
 * except for dev/inode (a restore may recreate the shmem objects): range,
 * permissions, offset and name ("/dev/zero (deleted)", "/memfd:zdtm
 * (deleted)", "/SYSV00000000 (deleted)").  The SysV id is not checked.
 * The child reports over a pipe and exits 0.
 *
 * Corruption: "unshare" (the child swaps the anon region for a private copy).
 */
#include "zdtm.h"
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

#define PG 4096
#define SZ (4 * PG)

enum { ANON, MEMFD, SYSV, NR };
static const char *kind[NR] = { "anon", "memfd", "sysv" };
static char *reg[NR];
static int memfd;
static char lines_before[NR][256];

struct marker {
	char tag[8];
	uint64_t magic;
};

static void put(char *at, const char *tag)
{
	struct marker m;

	memset(&m, 0, sizeof(m));
	snprintf(m.tag, sizeof(m.tag), "%s", tag);
	m.magic = 0x5ba4ed0000000000ull | (unsigned char)tag[0] << 8 | (unsigned char)tag[1];
	memcpy(at, &m, sizeof(m));
	__sync_synchronize();
}

static int has(const char *at, const char *tag)
{
	struct marker m;

	__sync_synchronize();
	memcpy(&m, at, sizeof(m));
	return strcmp(m.tag, tag) == 0 &&
	       m.magic == (0x5ba4ed0000000000ull | (unsigned char)tag[0] << 8 | (unsigned char)tag[1]);
}

static int wait_for(const char *at, const char *tag, int ms)
{
	for (int i = 0; i < ms; i++) {
		if (has(at, tag))
			return 1;
		zdtm_sleep_ms(1);
	}
	return has(at, tag);
}

/* maps line of addr without the dev and inode columns */
static void maps_line(const char *addr, char *out, size_t n)
{
	static char maps[65536];
	char key[32], range[64], perms[8], off[16], dev[16], path[200];
	unsigned long ino;
	char *p;
	int kl = snprintf(key, sizeof(key), "%lx-", (unsigned long)addr);

	out[0] = 0;
	zdtm_read_file("/proc/self/maps", maps, sizeof(maps));
	for (p = maps; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p) {
		if (strncmp(p, key, kl) != 0)
			continue;
		path[0] = 0;
		if (sscanf(p, "%63s %7s %15s %15s %lu %199[^\n]", range, perms, off, dev, &ino, path) < 5)
			return;
		snprintf(out, n, "%s %s %s %s", range, perms, off, path + strspn(path, " "));
		return;
	}
}

/* Post-restore check shared by both processes; returns after recording errors. */
static void verify(const char *mine_new, const char *other_new, size_t new_off_mine, size_t new_off_other)
{
	static char fdbuf[SZ];

	for (int i = 0; i < NR; i++) {
		char line[256];
		long bad = zdtm_check_pat(reg[i], PG, 0x53000000 + i, 0);
		ZCHECK(bad < 0, "%s: pattern differs at %ld", kind[i], bad);
		ZCHECK(has(reg[i] + PG, "P1") && has(reg[i] + 2 * PG, "C1"), "%s: pre-checkpoint markers lost",
		       kind[i]);
		maps_line(reg[i], line, sizeof(line));
		ZCHECK(strcmp(line, lines_before[i]) == 0, "%s: maps line '%s', expected '%s'", kind[i], line,
		       lines_before[i]);
	}
	for (int i = 0; i < NR; i++)
		put(reg[i] + 3 * PG + new_off_mine, mine_new);
	for (int i = 0; i < NR; i++)
		ZCHECK(wait_for(reg[i] + 3 * PG + new_off_other, other_new, 3000),
		       "%s: the other process's new marker never appeared (region not shared any more)", kind[i]);
	if (pread(memfd, fdbuf, SZ, 0) != SZ)
		zdtm_err("pread memfd: %s", strerror(errno));
	else
		ZCHECK(memcmp(fdbuf, reg[MEMFD], SZ) == 0, "memfd content differs from its mapping");
}

int main(int argc, char **argv)
{
	int shmid, rep[2], sync[2], st;
	pid_t kid;
	char c;

	zdtm_init(argc, argv);

	reg[ANON] = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	memfd = memfd_create("zdtm", 0);
	if (memfd < 0 || ftruncate(memfd, SZ) < 0)
		zdtm_fail("memfd: %s", strerror(errno));
	reg[MEMFD] = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	shmid = shmget(IPC_PRIVATE, SZ, IPC_CREAT | 0600);
	if (shmid < 0)
		zdtm_fail("shmget: %s", strerror(errno));
	reg[SYSV] = shmat(shmid, NULL, 0);
	if (reg[SYSV] == (void *)-1)
		zdtm_fail("shmat: %s", strerror(errno));
	shmctl(shmid, IPC_RMID, NULL);
	if (reg[ANON] == MAP_FAILED || reg[MEMFD] == MAP_FAILED)
		zdtm_fail("mmap: %s", strerror(errno));
	for (int i = 0; i < NR; i++) {
		zdtm_fill(reg[i], PG, 0x53000000 + i, 0);
		maps_line(reg[i], lines_before[i], sizeof(lines_before[i]));
		if (!lines_before[i][0])
			zdtm_fail("self-test: %s region not in maps", kind[i]);
	}
	if (pipe(rep) < 0 || pipe(sync) < 0)
		zdtm_fail("pipe: %s", strerror(errno));

	kid = fork();
	if (kid < 0)
		zdtm_fail("fork: %s", strerror(errno));
	if (kid == 0) {
		char msg[256] = "OK";
		close(rep[0]);
		close(sync[0]);
		for (int i = 0; i < NR; i++)
			put(reg[i] + 2 * PG, "C1");
		for (int i = 0; i < NR; i++)
			if (!wait_for(reg[i] + PG, "P1", 5000))
				zdtm_err("child: no P1 in %s", kind[i]);
		if (write(sync[1], "r", 1) != 1)
			_exit(1);
		zdtm_wait();
		if (zdtm_corrupt("unshare")) {
			char *copy = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			memcpy(copy, reg[ANON], SZ);
			mremap(copy, SZ, SZ, MREMAP_MAYMOVE | MREMAP_FIXED, reg[ANON]);
			/* keep the maps line comparable: only sharing is broken */
			maps_line(reg[ANON], lines_before[ANON], sizeof(lines_before[ANON]));
		}
		verify("C2", "P2", 64, 0);
		if (zdtm_errors())
			snprintf(msg, sizeof(msg), "child: %.240s", zdtm_first_error());
		if (write(rep[1], msg, sizeof(msg)) != sizeof(msg))
			_exit(1);
		_exit(0);
	}
	close(rep[1]);
	close(sync[1]);
	for (int i = 0; i < NR; i++)
		put(reg[i] + PG, "P1");
	if (zdtm_read_full(sync[0], &c, 1, 10000) != 1)
		zdtm_fail("child did not get ready");
	for (int i = 0; i < NR; i++)
		if (!has(reg[i] + 2 * PG, "C1"))
			zdtm_fail("self-test: no C1 in %s", kind[i]);

	zdtm_ready();
	zdtm_wait();

	kill(kid, SIGTERM);
	verify("P2", "C2", 0, 64);
	{
		char msg[256];
		if (zdtm_read_full(rep[0], msg, sizeof(msg), 10000) != sizeof(msg))
			zdtm_err("no report from the child");
		else if (strcmp(msg, "OK") != 0)
			zdtm_err("%s", msg);
	}
	if (zdtm_waitpid(kid, &st, 0, 10000) != kid)
		zdtm_err("child did not exit");
	else
		ZCHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	zdtm_finish();
}
