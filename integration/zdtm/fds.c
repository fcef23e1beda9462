/*
 * fds (cf. zdtm file_* tests): a file descriptor table with high numbers.
 *
 *   100  fds.rw        O_RDWR, offset 12345, FD_CLOEXEC set
 *   101  fds.append    O_WRONLY|O_APPEND|O_CLOEXEC, offset at its end (4000)
 *   102  fds.unlinked  O_RDWR, unlinked after writing 8 KiB; offset 4096
 *   103  state dir     O_RDONLY|O_DIRECTORY
 *   104  dup of 100    shares the file description (offset), no FD_CLOEXEC
 *   105  fds.fifo      read end, O_RDONLY|O_NONBLOCK, 1000 bytes unread
 *   106  fds.fifo      write end, O_WRONLY
 *   1000 /dev/null     O_WRONLY
 * plus 0, 1, 2 inherited from the harness (stdin /dev/null, stdout and
 * stderr the O_APPEND log file).  Every other fd is closed.
 *
 * Verified after SIGTERM: the set of open fds is exactly that; for each fd
 * F_GETFL, F_GETFD, offset and st_dev/st_ino/st_mode/st_rdev are unchanged
 * (except the inode of the unlinked file: it cannot survive the original);
 * the regular files' inodes are those of the paths (same files, not
 * copies); the unlinked file still has st_nlink 0, its content, its size
 * and /proc/self/fd/102 reads "<dir>/fds.unlinked (deleted)"; 100/104
 * still share one offset; the directory fd resolves relative opens; the
 * FIFO holds exactly its 1000 bytes and its two ends are still connected.
 *
 * The checks only read files (they move offsets, not contents), so that in
 * the leave-running mode the original may verify itself before the restore.
 *
 * Corruptions: "offset", "cloexec", "close", "fifo".
 */
#include "zdtm.h"
#include <dirent.h>
#include <sys/sysmacros.h>

#define RW_SIZE 65536
#define UNL_SIZE 8192
#define FIFO_BYTES 1000

static const int fdnums[] = { 0, 1, 2, 100, 101, 102, 103, 104, 105, 106, 1000 };
#define NFD (int)(sizeof(fdnums) / sizeof(fdnums[0]))

struct fdstate {
	int fl, fd_flags;
	off_t off;
	struct stat st;
};
static struct fdstate before[NFD];

static void move_fd(int fd, int to)
{
	if (fd < 0)
		zdtm_fail("open for fd %d: %s", to, strerror(errno));
	if (fd == to)
		return;
	if (dup3(fd, to, 0) < 0)
		zdtm_fail("dup3 %d->%d: %s", fd, to, strerror(errno));
	close(fd);
}

static void snapshot(struct fdstate *s)
{
	for (int i = 0; i < NFD; i++) {
		int fd = fdnums[i];
		s[i].fl = fcntl(fd, F_GETFL);
		s[i].fd_flags = fcntl(fd, F_GETFD);
		s[i].off = lseek(fd, 0, SEEK_CUR);
		if (fstat(fd, &s[i].st) < 0)
			memset(&s[i].st, 0xff, sizeof(s[i].st));
	}
}

static void write_file(const char *name, size_t len, uint32_t seed)
{
	static char buf[RW_SIZE];
	int fd = open(zdtm_path(name), O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0)
		zdtm_fail("create %s: %s", name, strerror(errno));
	zdtm_fill(buf, len, seed, 0);
	if (zdtm_write_all(fd, buf, len) < 0)
		zdtm_fail("write %s: %s", name, strerror(errno));
	close(fd);
}

static void check_content(int fd, off_t off, size_t len, uint32_t seed, const char *what)
{
	static char buf[RW_SIZE];
	ssize_t r = pread(fd, buf, len, off);
	long bad;

	if (r != (ssize_t)len) {
		zdtm_err("%s: pread %zd of %zu bytes: %s", what, r, len, strerror(errno));
		return;
	}
	bad = zdtm_check_pat(buf, len, seed, off);
	ZCHECK(bad < 0, "%s: content differs at offset %ld", what, (long)off + bad);
}

int main(int argc, char **argv)
{
	struct fdstate now[NFD];
	char buf[FIFO_BYTES + 16], fifo_data[FIFO_BYTES];
	struct stat st;
	DIR *d;
	struct dirent *de;
	int seen[NFD] = { 0 };
	int fd;

	zdtm_init(argc, argv);

	/* nothing but 0,1,2 may be open */
	for (fd = 3; fd < 1024; fd++)
		close(fd);

	write_file("fds.rw", RW_SIZE, 0xf0000001);
	fd = open(zdtm_path("fds.rw"), O_RDWR);
	move_fd(fd, 100);
	lseek(100, 12345, SEEK_SET);
	fcntl(100, F_SETFD, FD_CLOEXEC);

	write_file("fds.append", 4000, 0xf0000002);
	fd = open(zdtm_path("fds.append"), O_WRONLY | O_APPEND | O_CLOEXEC);
	move_fd(fd, 101);
	fcntl(101, F_SETFD, FD_CLOEXEC); /* dup3 without O_CLOEXEC dropped it */
	lseek(101, 0, SEEK_END);

	write_file("fds.unlinked", UNL_SIZE, 0xf0000003);
	fd = open(zdtm_path("fds.unlinked"), O_RDWR);
	move_fd(fd, 102);
	unlink(zdtm_path("fds.unlinked"));
	lseek(102, 4096, SEEK_SET);

	fd = open(zdtm_dir, O_RDONLY | O_DIRECTORY);
	move_fd(fd, 103);

	if (dup2(100, 104) < 0)
		zdtm_fail("dup2: %s", strerror(errno));

	unlink(zdtm_path("fds.fifo"));
	if (mkfifo(zdtm_path("fds.fifo"), 0600) < 0)
		zdtm_fail("mkfifo: %s", strerror(errno));
	fd = open(zdtm_path("fds.fifo"), O_RDONLY | O_NONBLOCK);
	move_fd(fd, 105);
	fd = open(zdtm_path("fds.fifo"), O_WRONLY);
	move_fd(fd, 106);
	zdtm_fill(fifo_data, FIFO_BYTES, 0xf0000004, 0);
	if (write(106, fifo_data, FIFO_BYTES) != FIFO_BYTES)
		zdtm_fail("write fifo: %s", strerror(errno));

	fd = open("/dev/null", O_WRONLY);
	move_fd(fd, 1000);

	snapshot(before);
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("offset"))
		lseek(102, 100, SEEK_SET);
	if (zdtm_corrupt("cloexec"))
		fcntl(104, F_SETFD, FD_CLOEXEC);
	if (zdtm_corrupt("close"))
		close(103);
	if (zdtm_corrupt("fifo"))
		if (read(105, buf, 1) != 1)
			zdtm_log("corrupt read failed");

	/* exactly the expected fds are open */
	d = opendir("/proc/self/fd");
	if (!d)
		zdtm_fail("opendir /proc/self/fd: %s", strerror(errno));
	while ((de = readdir(d))) {
		int n, found = 0;
		if (de->d_name[0] == '.')
			continue;
		n = atoi(de->d_name);
		if (n == dirfd(d))
			continue;
		for (int i = 0; i < NFD; i++)
			if (fdnums[i] == n) {
				seen[i] = found = 1;
			}
		if (!found) {
			char link[256] = "", p[64];
			snprintf(p, sizeof(p), "/proc/self/fd/%d", n);
			if (readlink(p, link, sizeof(link) - 1) < 0)
				link[0] = 0;
			zdtm_err("unexpected fd %d open (%s)", n, link);
		}
	}
	closedir(d);
	for (int i = 0; i < NFD; i++)
		ZCHECK(seen[i], "fd %d is not open", fdnums[i]);

	snapshot(now);
	for (int i = 0; i < NFD; i++) {
		struct fdstate *a = &before[i], *b = &now[i];
		int fdn = fdnums[i];
		if (!seen[i])
			continue;
		ZCHECK(a->fl == b->fl, "fd %d: F_GETFL %#o, expected %#o", fdn, b->fl, a->fl);
		ZCHECK(a->fd_flags == b->fd_flags, "fd %d: F_GETFD %#x, expected %#x", fdn, b->fd_flags,
		       a->fd_flags);
		/* 0-2 belong to the harness; logging moves the log's offset */
		ZCHECK(fdn <= 2 || a->off == b->off, "fd %d: offset %lld, expected %lld", fdn, (long long)b->off,
		       (long long)a->off);
		/* a deleted file cannot keep its inode once the original is gone */
		ZCHECK(fdn == 102 || (a->st.st_dev == b->st.st_dev && a->st.st_ino == b->st.st_ino),
		       "fd %d: file %llx:%llu, expected %llx:%llu", fdn, (unsigned long long)b->st.st_dev,
		       (unsigned long long)b->st.st_ino, (unsigned long long)a->st.st_dev,
		       (unsigned long long)a->st.st_ino);
		ZCHECK(a->st.st_mode == b->st.st_mode, "fd %d: st_mode %#o, expected %#o", fdn, b->st.st_mode,
		       a->st.st_mode);
		ZCHECK(a->st.st_rdev == b->st.st_rdev, "fd %d: st_rdev changed", fdn);
	}

	/* regular files: same inodes as the paths, contents */
	if (stat(zdtm_path("fds.rw"), &st) == 0)
		ZCHECK(st.st_ino == now[3].st.st_ino, "fd 100 is not fds.rw");
	if (stat(zdtm_path("fds.append"), &st) == 0)
		ZCHECK(st.st_ino == now[4].st.st_ino, "fd 101 is not fds.append");
	if (stat(zdtm_dir, &st) == 0)
		ZCHECK(st.st_ino == now[6].st.st_ino, "fd 103 is not the state dir");
	check_content(100, 0, RW_SIZE, 0xf0000001, "fds.rw");
	ZCHECK(now[4].st.st_size == 4000, "fds.append size %lld", (long long)now[4].st.st_size);
	ZCHECK((now[4].fl & O_ACCMODE) == O_WRONLY && (now[4].fl & O_APPEND), "fd 101 flags %#o", now[4].fl);
	ZCHECK((now[3].fl & O_ACCMODE) == O_RDWR, "fd 100 flags %#o", now[3].fl);

	/* unlinked file */
	ZCHECK(now[5].st.st_nlink == 0, "fd 102: st_nlink %lu, expected 0", (unsigned long)now[5].st.st_nlink);
	ZCHECK(now[5].st.st_size == UNL_SIZE, "fd 102: size %lld", (long long)now[5].st.st_size);
	check_content(102, 0, UNL_SIZE, 0xf0000003, "unlinked file");
	{
		char link[PATH_MAX] = "";
		ssize_t l = readlink("/proc/self/fd/102", link, sizeof(link) - 1);
		if (l > 0)
			link[l] = 0;
		char want[PATH_MAX];
		snprintf(want, sizeof(want), "%s (deleted)", zdtm_path("fds.unlinked"));
		ZCHECK(strcmp(link, want) == 0, "fd 102 link is '%s', expected '%s'", link, want);
	}

	/* dup'ed fds share one offset */
	lseek(100, 777, SEEK_SET);
	ZCHECK(lseek(104, 0, SEEK_CUR) == 777, "fds 100 and 104 no longer share their offset");
	lseek(100, 12345, SEEK_SET);

	/* directory fd */
	fd = openat(103, "fds.append", O_RDONLY);
	ZCHECK(fd >= 0, "openat(dirfd, fds.append): %s", strerror(errno));
	if (fd >= 0)
		close(fd);
	ZCHECK(S_ISDIR(now[6].st.st_mode), "fd 103 is not a directory");

	/* /dev/null */
	ZCHECK(S_ISCHR(now[10].st.st_mode) && now[10].st.st_rdev == makedev(1, 3), "fd 1000 is not /dev/null");
	ZCHECK(write(1000, "x", 1) == 1, "write /dev/null: %s", strerror(errno));

	/* FIFO content and connectivity */
	{
		ssize_t r = read(105, buf, sizeof(buf));
		if (r != FIFO_BYTES)
			zdtm_err("fifo: read %zd bytes, expected %d (%s)", r, FIFO_BYTES, r < 0 ? strerror(errno) : "");
		else
			ZCHECK(memcmp(buf, fifo_data, FIFO_BYTES) == 0, "fifo content differs");
		r = read(105, buf, 1);
		ZCHECK(r < 0 && errno == EAGAIN, "fifo: extra data or wrong mode (read %zd)", r);
		ZCHECK(write(106, "ping", 4) == 4, "fifo write: %s", strerror(errno));
		r = read(105, buf, sizeof(buf));
		ZCHECK(r == 4 && memcmp(buf, "ping", 4) == 0, "fifo ends not connected (read %zd)", r);
	}
	zdtm_finish();
}
