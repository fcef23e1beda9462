/*
 * file_locks (cf. zdtm file_locks00-08, ofd_file_locks): the three kinds of
 * file lock, held by two processes on files of the state directory.
 *
 * State built before the checkpoint:
 *  - "a": flock LOCK_EX through fa, inherited by a child (a flock lock
 *    belongs to the open file, so the child's fa shows it too);
 *  - "b": POSIX locks WRITE 0-99 and READ 200-EOF through fb (and fb2, a
 *    dup of it); the child opens "b" again and holds WRITE 100-149 on it;
 *    its inherited fb shows none of the parent's POSIX locks;
 *  - "c": OFD lock WRITE 10-19 through fc;
 *  - "d": two opens (fd1, fd2), each with flock LOCK_SH.
 *
 * Verified after SIGTERM:
 *  - each fd's /proc/self/fdinfo lists exactly its locks;
 *  - through fresh opens (F_OFD_GETLK, flock LOCK_NB): the right ranges
 *    are held by the right owner (parent pid, child pid, or an OFD lock)
 *    and nothing else is; "a" cannot be locked, "d" can be shared but
 *    not taken exclusively.
 * The child checks its own fdinfo (fa, its open of "b", the inherited fb)
 * when the root tells it to, and exits 0 if all is well.
 *
 * Corruptions: "posix" (fb's WRITE 0-99 unlocked), "flock" (fa unlocked),
 * "ofd" (fc's lock unlocked), "child" (the child unlocks its range first).
 */
#include "zdtm.h"
#include <sys/file.h>
#include <sys/wait.h>

/* The lock lines of `fd`'s fdinfo, as "KIND TYPE START END;" in order. */
static void locks_of(int fd, char *out, size_t n)
{
	char path[64], text[4096], kind[16], type[16], end[32];
	long long start;
	char *line, *save = NULL;

	out[0] = 0;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (zdtm_read_file(path, text, sizeof(text)) < 0) {
		snprintf(out, n, "unreadable");
		return;
	}
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "lock:", 5))
			continue;
		/* "lock:\t1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF" */
		if (sscanf(line, "lock: %*d: %15s %*s %15s %*d %*s %lld %31s", kind, type, &start, end) != 4) {
			snprintf(out, n, "bad line %s", line);
			return;
		}
		snprintf(out + strlen(out), n - strlen(out), "%s %s %lld %s;", kind, type, start, end);
	}
}

#define EXPECT_LOCKS(fd, want)                                                      \
	do {                                                                        \
		char got_[512];                                                     \
		locks_of(fd, got_, sizeof(got_));                                   \
		ZCHECK(!strcmp(got_, want), "fd %d (%s): locks \"%s\", want \"%s\"", fd, #fd, got_, want); \
	} while (0)

/* The first lock conflicting with a `type` lock on [start, start+len). */
static struct flock probe(int fd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	if (fcntl(fd, F_OFD_GETLK, &fl))
		fl.l_type = -1;
	return fl;
}

#define EXPECT_HELD(fd, type, start, len, want_type, want_pid)                                      \
	do {                                                                                        \
		struct flock f_ = probe(fd, type, start, len);                                      \
		ZCHECK(f_.l_type == (want_type) && (f_.l_type == F_UNLCK || f_.l_pid == (want_pid)), \
		       "%s %lld+%lld: held as type %d by %d, want type %d by %d", #fd,               \
		       (long long)(start), (long long)(len), f_.l_type, (int)f_.l_pid, want_type, (int)(want_pid)); \
	} while (0)

static int child_main(int fa, int fb, int cmd, int up)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 50 };
	int own = open("b", O_RDWR);
	char c;

	if (own < 0 || fcntl(own, F_SETLK, &fl))
		return 10;
	if (write(up, "k", 1) != 1)
		return 11;
	while (read(cmd, &c, 1) < 0 && errno == EINTR)
		;
	if (c == 'u') {
		fl.l_type = F_UNLCK;
		fcntl(own, F_SETLK, &fl);
	}
	EXPECT_LOCKS(fa, "FLOCK WRITE 0 EOF;");
	EXPECT_LOCKS(own, "POSIX WRITE 100 149;");
	EXPECT_LOCKS(fb, "");
	if (zdtm_errors())
		zdtm_log("child: %s", zdtm_first_error());
	return zdtm_errors() ? 1 : 0;
}

int main(int argc, char **argv)
{
	int fa, fb, fb2, fc, fd1, fd2, oa, ob, oc, od, cmd[2], up[2], status;
	struct flock w0 = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
	struct flock r200 = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 200, .l_len = 0 };
	struct flock o10 = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 10 };
	pid_t kid, me;
	char c;

	zdtm_init(argc, argv);
	me = getpid();
	fa = open("a", O_RDWR | O_CREAT, 0644);
	fb = open("b", O_RDWR | O_CREAT, 0644);
	fc = open("c", O_RDWR | O_CREAT, 0644);
	fd1 = open("d", O_RDONLY | O_CREAT, 0644);
	fd2 = open("d", O_RDONLY);
	if (fa < 0 || fb < 0 || fc < 0 || fd1 < 0 || fd2 < 0 || (fb2 = dup(fb)) < 0)
		zdtm_fail("open: %s", strerror(errno));
	if (flock(fa, LOCK_EX) || fcntl(fb, F_SETLK, &w0) || fcntl(fb, F_SETLK, &r200) || fcntl(fc, F_OFD_SETLK, &o10) ||
	    flock(fd1, LOCK_SH) || flock(fd2, LOCK_SH))
		zdtm_fail("lock: %s", strerror(errno));
	if (pipe(cmd) || pipe(up))
		zdtm_fail("pipe: %s", strerror(errno));
	kid = fork();
	if (kid < 0)
		zdtm_fail("fork: %s", strerror(errno));
	if (kid == 0)
		_exit(child_main(fa, fb, cmd[0], up[1]));
	if (read(up[0], &c, 1) != 1)
		zdtm_fail("the child did not take its lock");
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("posix")) {
		w0.l_type = F_UNLCK;
		fcntl(fb, F_SETLK, &w0);
	}
	if (zdtm_corrupt("flock"))
		flock(fa, LOCK_UN);
	if (zdtm_corrupt("ofd")) {
		o10.l_type = F_UNLCK;
		fcntl(fc, F_OFD_SETLK, &o10);
	}

	EXPECT_LOCKS(fa, "FLOCK WRITE 0 EOF;");
	EXPECT_LOCKS(fb, "POSIX WRITE 0 99;POSIX READ 200 EOF;");
	EXPECT_LOCKS(fb2, "POSIX WRITE 0 99;POSIX READ 200 EOF;");
	EXPECT_LOCKS(fc, "OFDLCK WRITE 10 19;");
	EXPECT_LOCKS(fd1, "FLOCK READ 0 EOF;");
	EXPECT_LOCKS(fd2, "FLOCK READ 0 EOF;");

	/* Closing these drops none of our POSIX locks on b: they are only
	 * closed once every check is done. */
	oa = open("a", O_RDONLY);
	ob = open("b", O_RDWR);
	oc = open("c", O_RDWR);
	od = open("d", O_RDONLY);
	EXPECT_HELD(ob, F_WRLCK, 0, 100, F_WRLCK, me);
	EXPECT_HELD(ob, F_WRLCK, 100, 50, F_WRLCK, kid);
	EXPECT_HELD(ob, F_WRLCK, 150, 50, F_UNLCK, 0);
	EXPECT_HELD(ob, F_RDLCK, 200, 0, F_UNLCK, 0);
	EXPECT_HELD(ob, F_WRLCK, 200, 0, F_RDLCK, me);
	EXPECT_HELD(oc, F_WRLCK, 0, 0, F_WRLCK, -1);
	EXPECT_HELD(oc, F_WRLCK, 20, 0, F_UNLCK, 0);
	ZCHECK(flock(oa, LOCK_SH | LOCK_NB) && errno == EWOULDBLOCK, "a: not locked exclusively");
	ZCHECK(flock(od, LOCK_EX | LOCK_NB) && errno == EWOULDBLOCK, "d: not locked shared");
	ZCHECK(!flock(od, LOCK_SH | LOCK_NB), "d: cannot be shared: %s", strerror(errno));

	if (write(cmd[1], zdtm_corrupt("child") ? "u" : "g", 1) != 1)
		zdtm_err("write to the child: %s", strerror(errno));
	while (waitpid(kid, &status, 0) < 0 && errno == EINTR)
		;
	ZCHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	close(oa);
	close(ob);
	close(oc);
	close(od);
	zdtm_finish();
}
