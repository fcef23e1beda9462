/*
 * pipe_data (cf. zdtm pipe00..03): data sitting in pipes.
 *
 *  p1: default-size pipe (16 buffers) filled with ~59 KiB of a pattern in
 *      16 writes (1000 bytes, 14 pages, 2000 bytes: partially filled
 *      buffers), then 1 KiB read back, so the first remaining buffer starts
 *      at a non-zero offset.  Both ends held by the root.
 *  p2: pipe resized to 256 KiB (F_SETPIPE_SZ) holding 200 KiB.
 *  p3: shared with a forked child: the child holds only the read end, the
 *      root only the write end; 4 KiB are written before the checkpoint.
 *  p4: "go" pipe; the child is blocked in read() on it during the checkpoint.
 *  p5: report pipe, child -> root.
 *
 * After SIGTERM the root reads p1 and p2 completely (O_NONBLOCK until
 * EAGAIN) and compares; checks F_GETPIPE_SZ of both; then writes the go byte
 * and another 4 KiB into p3 and closes its end.  The child reads p3 until EOF
 * (EOF proves no stray copy of the write end exists), checks both blocks,
 * its pid/ppid and that its p3 inode is the root's p3 inode (both read
 * after the restore: a restored pipe is a new pipe), and reports
 * "OK" or the error over p5.  The root waits for it with waitpid().
 *
 * Corruptions: "data", "size", "child".
 */
#include "zdtm.h"
#include <sys/wait.h>

/* 1000 + 14 pages + 2000: 16 pipe buffers, the default capacity */
#define P1_WRITE (1000 + 14 * 4096 + 2000)
#define P1_EAT 1024
#define P2_SIZE (256 * 1024)
#define P2_DATA (200 * 1024)
#define P3_BLOCK 4096

static char buf[P2_SIZE + 4096];

struct report {
	char msg[200];
	unsigned long long ino;
};

static void child(int p3r, int p4r, int p5w, pid_t ppid)
{
	struct report rep;
	pid_t pid = getpid();
	struct stat st;
	char go;
	size_t off = 0;
	int fl;
	long bad;

	memset(&rep, 0, sizeof(rep));
	/* blocked here while the tree is checkpointed */
	while (read(p4r, &go, 1) < 0 && errno == EINTR)
		;
	/* a restored pipe is a new pipe: only compare with the root's, now */
	fstat(p3r, &st);
	rep.ino = st.st_ino;

	fl = fcntl(p3r, F_GETFL);
	fcntl(p3r, F_SETFL, fl | O_NONBLOCK);
	for (;;) {
		ssize_t r;
		if (zdtm_wait_readable(p3r, 10000) <= 0) {
			snprintf(rep.msg, sizeof(rep.msg),
				 "child: no EOF on the shared pipe after %zu bytes (a stray write end?)", off);
			goto out;
		}
		r = read(p3r, buf + off, sizeof(buf) - off);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r <= 0)
			break;
		off += r;
	}
	if (off != 2 * P3_BLOCK) {
		snprintf(rep.msg, sizeof(rep.msg), "child: read %zu bytes from the shared pipe, expected %d", off,
			 2 * P3_BLOCK);
		goto out;
	}
	bad = zdtm_check_pat(buf, 2 * P3_BLOCK, 0x9e000003, 0);
	if (bad >= 0) {
		snprintf(rep.msg, sizeof(rep.msg), "child: shared pipe data differs at %ld", bad);
		goto out;
	}
	if (getpid() != pid || getppid() != ppid) {
		snprintf(rep.msg, sizeof(rep.msg), "child: pid/ppid %d/%d, expected %d/%d", (int)getpid(),
			 (int)getppid(), (int)pid, (int)ppid);
		goto out;
	}
	strcpy(rep.msg, "OK");
out:
	if (write(p5w, &rep, sizeof(rep)) != sizeof(rep))
		_exit(1);
	_exit(0);
}

static void drain_check(int fd, size_t expect, uint32_t seed, size_t base, const char *what)
{
	size_t off = 0;
	long bad;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	for (;;) {
		ssize_t r = read(fd, buf + off, sizeof(buf) - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		off += r;
	}
	if (off != expect) {
		zdtm_err("%s: %zu bytes in the pipe, expected %zu", what, off, expect);
		return;
	}
	bad = zdtm_check_pat(buf, expect, seed, base);
	ZCHECK(bad < 0, "%s: data differs at offset %ld", what, bad);
}

int main(int argc, char **argv)
{
	int p1[2], p2[2], p3[2], p4[2], p5[2];
	int p1sz, p2sz, status;
	size_t off;
	pid_t kid;
	struct report rep;
	struct stat st;

	zdtm_init(argc, argv);
	if (pipe(p1) || pipe(p2) || pipe(p3) || pipe(p4) || pipe(p5))
		zdtm_fail("pipe: %s", strerror(errno));

	zdtm_fill(buf, P1_WRITE, 0x9e000001, 0);
	for (off = 0; off < P1_WRITE;) {
		/* a write that does not fit the last page starts a new buffer */
		size_t chunk = off == 0 ? 1000 : (P1_WRITE - off == 2000 ? 2000 : 4096);
		if (zdtm_write_all(p1[1], buf + off, chunk) < 0)
			zdtm_fail("write p1: %s", strerror(errno));
		off += chunk;
	}
	if (read(p1[0], buf, P1_EAT) != P1_EAT)
		zdtm_fail("read p1");
	p1sz = fcntl(p1[0], F_GETPIPE_SZ);

	if (fcntl(p2[1], F_SETPIPE_SZ, P2_SIZE) < 0)
		zdtm_fail("F_SETPIPE_SZ: %s", strerror(errno));
	p2sz = fcntl(p2[0], F_GETPIPE_SZ);
	zdtm_fill(buf, P2_DATA, 0x9e000002, 0);
	if (zdtm_write_all(p2[1], buf, P2_DATA) < 0)
		zdtm_fail("write p2: %s", strerror(errno));

	zdtm_fill(buf, 2 * P3_BLOCK, 0x9e000003, 0);
	if (zdtm_write_all(p3[1], buf, P3_BLOCK) < 0)
		zdtm_fail("write p3: %s", strerror(errno));

	kid = fork();
	if (kid < 0)
		zdtm_fail("fork: %s", strerror(errno));
	if (kid == 0) {
		pid_t ppid = getppid();
		close(p1[0]);
		close(p1[1]);
		close(p2[0]);
		close(p2[1]);
		close(p3[1]);
		close(p4[1]);
		close(p5[0]);
		child(p3[0], p4[0], p5[1], ppid);
	}
	close(p3[0]);
	close(p4[0]);
	close(p5[1]);

	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("data")) {
		char c;
		if (read(p1[0], &c, 1) != 1)
			zdtm_log("corrupt read failed");
	}
	if (zdtm_corrupt("size"))
		fcntl(p2[0], F_SETPIPE_SZ, 2 * P2_SIZE);

	ZCHECK(fcntl(p1[0], F_GETPIPE_SZ) == p1sz, "p1 size %d, expected %d", fcntl(p1[0], F_GETPIPE_SZ), p1sz);
	ZCHECK(fcntl(p2[0], F_GETPIPE_SZ) == p2sz, "p2 size %d, expected %d", fcntl(p2[0], F_GETPIPE_SZ), p2sz);
	drain_check(p1[0], P1_WRITE - P1_EAT, 0x9e000001, P1_EAT, "p1");
	drain_check(p2[0], P2_DATA, 0x9e000002, 0, "p2");

	/* p1 and p2 still work as pipes */
	ZCHECK(write(p1[1], "abc", 3) == 3 && read(p1[0], buf, 10) == 3, "p1 no longer a working pipe");

	fstat(p3[1], &st);
	zdtm_fill(buf, 2 * P3_BLOCK, 0x9e000003, 0);
	if (write(p4[1], "g", 1) != 1)
		zdtm_err("write go: %s", strerror(errno));
	if (zdtm_write_all(p3[1], buf + P3_BLOCK, P3_BLOCK) < 0)
		zdtm_err("write p3: %s", strerror(errno));
	if (zdtm_corrupt("child"))
		if (write(p3[1], "extra", 5) != 5)
			zdtm_log("corrupt write failed");
	close(p3[1]);

	memset(&rep, 0, sizeof(rep));
	if (zdtm_read_full(p5[0], &rep, sizeof(rep), 15000) != sizeof(rep))
		zdtm_err("no report from the child");
	else {
		ZCHECK(strcmp(rep.msg, "OK") == 0, "%s", rep.msg);
		ZCHECK(rep.ino == st.st_ino, "child's p3 inode %llu != root's %llu (not the same pipe)", rep.ino,
		       (unsigned long long)st.st_ino);
	}
	if (zdtm_waitpid(kid, &status, 0, 10000) != kid)
		zdtm_err("waitpid(child %d): %s", (int)kid, errno ? strerror(errno) : "timeout");
	else
		ZCHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	zdtm_finish();
}
