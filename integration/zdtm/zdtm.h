/*
 * zdtm.h - header-only support library for the stasis zdtm-style tests.
 *
 * Protocol (driven by integration/tests/zdtm.rs):
 *   argv[1] is a state directory (absolute path).
 *   1. zdtm_init(argc, argv)  remembers the directory and installs a SIGTERM
 *                             handler that only sets a flag.
 *   2. the test builds the state under test and records expected values.
 *   3. zdtm_ready()           atomically creates <dir>/ready.
 *   4. zdtm_wait()            sleeps in sigsuspend() until SIGTERM arrived.
 *                             Busy tests poll zdtm_stopping() instead.
 *   5. the test verifies its state with ZCHECK()/zdtm_err() and calls
 *      zdtm_finish(), which atomically writes <dir>/result ("PASS\n" or
 *      "FAIL: <first error>\n") and exits 0.
 *
 * Negative self-test: if <dir>/corrupt exists and contains a line equal to
 * KIND, zdtm_corrupt("KIND") returns 1.  Tests use it right after waking up
 * to break one piece of their state the way a bad restore would, proving
 * that the verification can fail.
 *
 * Only the root process of a test writes <dir>/result.  Child processes
 * collect errors with zdtm_err() as well and send zdtm_first_error() to the
 * root (each test documents how).
 *
 * Nothing in here calls malloc(): several tests (brk_heap, maps_sparse)
 * compare the heap and the memory map before and after the checkpoint.
 */
#ifndef ZDTM_H
#define ZDTM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static const char *zdtm_dir = ".";
static volatile sig_atomic_t zdtm_term_flag;
static int zdtm_nerr;
static char zdtm_err_buf[512];

static __attribute__((unused)) void zdtm_term_handler(int sig)
{
	(void)sig;
	zdtm_term_flag = 1;
}

/* 1 once SIGTERM has been received (for busy-waiting tests). */
static inline int zdtm_stopping(void)
{
	return zdtm_term_flag;
}

static inline pid_t zdtm_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* printf to stderr with a prefix; stderr is <dir>/log under the harness. */
__attribute__((unused, format(printf, 1, 2))) static void zdtm_log(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n = snprintf(buf, sizeof(buf), "zdtm[%d]: ", (int)getpid());

	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
	va_end(ap);
	n = strlen(buf);
	if (n < (int)sizeof(buf) - 1)
		buf[n++] = '\n';
	if (write(2, buf, n) < 0) {
		/* nothing sensible to do */
	}
}

/* Record an error (the first one goes to the result line). */
__attribute__((unused, format(printf, 1, 2))) static void zdtm_err(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	zdtm_log("ERROR: %s", buf);
	if (zdtm_nerr++ == 0)
		memcpy(zdtm_err_buf, buf, sizeof(buf));
}

#define ZCHECK(cond, ...)                   \
	do {                                \
		if (!(cond))                \
			zdtm_err(__VA_ARGS__); \
	} while (0)

static inline int zdtm_errors(void)
{
	return zdtm_nerr;
}

static inline const char *zdtm_first_error(void)
{
	return zdtm_nerr ? zdtm_err_buf : "";
}

/* Read a whole (small) file into buf, NUL-terminated. Returns length or -1. */
static __attribute__((unused)) ssize_t zdtm_read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t off = 0;

	if (fd < 0)
		return -1;
	while (off + 1 < size) {
		ssize_t r = read(fd, buf + off, size - 1 - off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		off += r;
	}
	close(fd);
	buf[off] = 0;
	return off;
}

/* Reads exactly `n` bytes (retrying on EINTR); -1 on error or end of file. */
static __attribute__((unused)) int zdtm_read_exact(int fd, void *buf, size_t n)
{
	char *b = buf;
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, b + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

static __attribute__((unused)) int zdtm_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= w;
	}
	return 0;
}

/* Atomically create <dir>/<name> with the given content (tmp + rename). */
static __attribute__((unused)) int zdtm_write_state(const char *name, const char *content)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	int fd;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%d", zdtm_dir, name, (int)zdtm_gettid());
	snprintf(dst, sizeof(dst), "%s/%s", zdtm_dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		zdtm_log("open %s: %s", tmp, strerror(errno));
		return -1;
	}
	if (zdtm_write_all(fd, content, strlen(content)) < 0) {
		zdtm_log("write %s: %s", tmp, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	if (rename(tmp, dst) < 0) {
		zdtm_log("rename %s: %s", dst, strerror(errno));
		return -1;
	}
	return 0;
}

/* Path of a file inside the state directory (static buffer rotation). */
static __attribute__((unused)) const char *zdtm_path(const char *name)
{
	static char bufs[8][PATH_MAX];
	static int idx;
	char *b = bufs[idx++ & 7];

	snprintf(b, PATH_MAX, "%s/%s", zdtm_dir, name);
	return b;
}

static __attribute__((unused)) void zdtm_init(int argc, char **argv)
{
	struct sigaction sa;

	if (argc < 2) {
		fprintf(stderr, "usage: %s STATE_DIR\n", argv[0]);
		exit(2);
	}
	zdtm_dir = argv[1];
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = zdtm_term_handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGTERM, &sa, NULL) < 0) {
		perror("sigaction(SIGTERM)");
		exit(2);
	}
}

/* Signal the harness that the state is built and may be checkpointed. */
static __attribute__((unused)) void zdtm_ready(void)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (zdtm_write_state("ready", buf) < 0)
		exit(3);
}

/*
 * Sleep until SIGTERM.  The signal mask on return equals the mask on entry
 * (SIGTERM must not be blocked on entry).
 */
static __attribute__((unused)) void zdtm_wait(void)
{
	sigset_t blk, old;

	sigemptyset(&blk);
	sigaddset(&blk, SIGTERM);
	sigprocmask(SIG_BLOCK, &blk, &old);
	sigdelset(&old, SIGTERM);
	while (!zdtm_term_flag)
		sigsuspend(&old);
	sigprocmask(SIG_SETMASK, &old, NULL);
}

/* 1 if <dir>/corrupt contains the line KIND (negative self-test). */
static __attribute__((unused)) int zdtm_corrupt(const char *kind)
{
	char buf[1024];
	size_t kl = strlen(kind);
	char *p;

	if (zdtm_read_file(zdtm_path("corrupt"), buf, sizeof(buf)) < 0)
		return 0;
	for (p = buf; *p;) {
		char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) : strlen(p);
		if (l == kl && memcmp(p, kind, kl) == 0) {
			zdtm_log("corrupting '%s' on purpose", kind);
			return 1;
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	return 0;
}

__attribute__((unused, noreturn)) static void zdtm_pass(void)
{
	zdtm_log("PASS");
	zdtm_write_state("result", "PASS\n");
	exit(0);
}

__attribute__((unused, noreturn, format(printf, 1, 2))) static void zdtm_fail(const char *fmt, ...)
{
	char buf[600], line[640];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	zdtm_log("FAIL: %s", buf);
	snprintf(line, sizeof(line), "FAIL: %s\n", buf);
	zdtm_write_state("result", line);
	exit(0);
}

/* PASS if no zdtm_err() was recorded, FAIL with the first error otherwise. */
__attribute__((unused, noreturn)) static void zdtm_finish(void)
{
	if (zdtm_nerr == 0)
		zdtm_pass();
	if (zdtm_nerr == 1)
		zdtm_fail("%s", zdtm_err_buf);
	zdtm_fail("%s (and %d more errors, see log)", zdtm_err_buf, zdtm_nerr - 1);
}

/* ---- small helpers shared by several tests ---- */

static inline uint64_t zdtm_now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static inline void zdtm_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Deterministic byte pattern: depends on a seed and the offset. */
static inline unsigned char zdtm_pat(uint32_t seed, size_t off)
{
	uint32_t x = seed ^ (uint32_t)(off * 2654435761u) ^ (uint32_t)(off >> 12);

	x ^= x >> 15;
	x *= 0x2c1b3c6du;
	x ^= x >> 12;
	return (unsigned char)x;
}

static inline void zdtm_fill(void *buf, size_t len, uint32_t seed, size_t base)
{
	unsigned char *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = zdtm_pat(seed, base + i);
}

/* Offset of the first mismatch, or -1 if the buffer matches the pattern. */
static inline long zdtm_check_pat(const void *buf, size_t len, uint32_t seed, size_t base)
{
	const unsigned char *p = buf;

	for (size_t i = 0; i < len; i++)
		if (p[i] != zdtm_pat(seed, base + i))
			return (long)i;
	return -1;
}

/* VmFlags of the VMA starting at addr, with " sd" (soft-dirty, which
 * comes and goes) removed; "" if there is no such VMA. */
static __attribute__((unused)) void zdtm_vmflags(unsigned long addr, char *out, size_t n)
{
	static char smaps[1 << 20];
	char key[32], *p, *fl;
	size_t kl;

	out[0] = 0;
	if (zdtm_read_file("/proc/self/smaps", smaps, sizeof(smaps)) < 0)
		return;
	kl = snprintf(key, sizeof(key), "%lx-", addr);
	for (p = smaps; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p) {
		if (strncmp(p, key, kl) != 0)
			continue;
		fl = strstr(p, "VmFlags:");
		if (!fl)
			return;
		fl += 8;
		while (*fl && *fl != '\n' && n > 4) {
			if (fl[0] == ' ' && fl[1] == 's' && fl[2] == 'd' && (fl[3] == ' ' || fl[3] == '\n')) {
				fl += 3;
				continue;
			}
			*out++ = *fl++;
			n--;
		}
		*out = 0;
		return;
	}
}

/* Wait (up to timeout_ms) until fd is readable. 1 readable, 0 timeout. */
#include <poll.h>
static __attribute__((unused)) int zdtm_wait_readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t end = zdtm_now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000ull;

	for (;;) {
		uint64_t now = zdtm_now_ns(CLOCK_MONOTONIC);
		int left = now >= end ? 0 : (int)((end - now) / 1000000ull);
		int r = poll(&p, 1, left);
		if (r > 0)
			return 1;
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

/* read() exactly len bytes with an overall timeout. Returns bytes read. */
static __attribute__((unused)) ssize_t zdtm_read_full(int fd, void *buf, size_t len, int timeout_ms)
{
	size_t off = 0;

	while (off < len) {
		ssize_t r;
		if (zdtm_wait_readable(fd, timeout_ms) <= 0)
			break;
		r = read(fd, (char *)buf + off, len - off);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			break;
		}
		if (r == 0)
			break;
		off += r;
	}
	return off;
}

/* Write a long multi-line text to the log, under a title. */
static __attribute__((unused)) void zdtm_log_text(const char *title, const char *text)
{
	zdtm_log("%s:", title);
	if (zdtm_write_all(2, text, strlen(text)) < 0 || zdtm_write_all(2, "\n", 1) < 0) {
		/* nothing sensible to do */
	}
}

/*
 * Compare two texts line by line.  Returns 0 if equal; otherwise records
 * an error naming the first differing line pair, logs both texts and
 * returns 1.
 */
static __attribute__((unused)) int zdtm_compare_text(const char *what, const char *before, const char *after)
{
	const char *a = before, *b = after;

	if (strcmp(before, after) == 0)
		return 0;
	for (;;) {
		size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
		if (la != lb || memcmp(a, b, la) != 0 || !a[la] || !b[lb])
			break;
		a += la + 1;
		b += lb + 1;
	}
	zdtm_err("%s changed; first difference: '%.*s' became '%.*s'", what, (int)strcspn(a, "\n"), a,
		 (int)strcspn(b, "\n"), b);
	zdtm_log_text("before", before);
	zdtm_log_text("after", after);
	return 1;
}

/*
 * Normalise /proc/self/maps text: merge adjacent lines that the kernel
 * could have merged into one VMA (contiguous addresses, same permissions,
 * device, inode and name, contiguous file offsets).  Whether two compatible
 * neighbours are one VMA or two is kernel bookkeeping (e.g. a RELRO page
 * written before it became read-only has an anon_vma and does not merge
 * with its neighbour, while the same pages mapped afresh by a restore do),
 * not something a program can rely on.  Name padding is reduced to one
 * space.  `out` must be at least as large as `in`.
 */
static __attribute__((unused)) void zdtm_normalize_maps(const char *in, char *out, size_t outsz)
{
	unsigned long ps = 0, pe = 0, poff = 0, pino = 0;
	char pperm[8] = "", pdev[16] = "", pname[512] = "";
	size_t o = 0;
	int have = 0;

	out[0] = 0;
	for (;;) {
		unsigned long s = 0, e = 0, off = 0, ino = 0;
		char perm[8] = "", dev[16] = "", name[512] = "", line[1024];
		size_t len = strcspn(in, "\n");
		int n = -1;

		if (*in) {
			snprintf(line, sizeof(line), "%.*s", (int)len, in);
			if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &s, &e, perm, &off, dev, &ino, &n) < 6)
				n = -1;
			else
				snprintf(name, sizeof(name), "%s", line + n);
		}
		if (have && *in && n >= 0 && s == pe && !strcmp(perm, pperm) && !strcmp(dev, pdev) && ino == pino &&
		    !strcmp(name, pname) && (ino == 0 ? off == poff : off == poff + (pe - ps))) {
			pe = e; /* extend the pending line */
		} else {
			if (have && o < outsz)
				o += snprintf(out + o, outsz - o, "%08lx-%08lx %s %08lx %s %lu %s\n", ps, pe, pperm,
					      poff, pdev, pino, pname);
			have = 0;
			if (!*in)
				break;
			if (n < 0) {
				if (o < outsz)
					o += snprintf(out + o, outsz - o, "%s\n", line);
			} else {
				ps = s;
				pe = e;
				poff = off;
				pino = ino;
				snprintf(pperm, sizeof(pperm), "%s", perm);
				snprintf(pdev, sizeof(pdev), "%s", dev);
				snprintf(pname, sizeof(pname), "%s", name);
				have = 1;
			}
		}
		in += len;
		if (*in == '\n')
			in++;
	}
}

/*
 * waitpid() with a timeout (polls with WNOHANG).  Returns the pid, 0 on
 * timeout, -1 on error (errno set).
 */
#include <sys/wait.h>
static __attribute__((unused)) pid_t zdtm_waitpid(pid_t pid, int *status, int options, int timeout_ms)
{
	uint64_t end = zdtm_now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000ull;

	for (;;) {
		pid_t r = waitpid(pid, status, options | WNOHANG);
		if (r != 0 && !(r < 0 && errno == EINTR))
			return r;
		if (zdtm_now_ns(CLOCK_MONOTONIC) >= end)
			return 0;
		zdtm_sleep_ms(1);
	}
}

#endif /* ZDTM_H */
