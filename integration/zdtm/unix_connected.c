/*
 * unix_connected (cf. zdtm sk-unix01, sockets_spair with names): Unix
 * connections made through named listeners, as a web server talks to
 * PHP-FPM or an application to PostgreSQL in the same container.
 *
 * State built before the checkpoint:
 *  - ls: stream listener on /tmp/zdtm-uc-<hash>.sock; the root connected
 *    c1 to it and a child holds the accepted end s1; "to-server" is queued
 *    for the child, "to-client" for the root;
 *  - lq: seqpacket listener on the abstract name "zdtm-uc-<hash>"; the root
 *    bound c2 to its own abstract name "zdtm-uc-<hash>-c" and connected it,
 *    and holds the accepted end s2 too.
 *
 * Verified after SIGTERM: every end has its names (s1's own is the path,
 * c1's peer is the path, s1's peer has none; c2's own and s2's peer are
 * the client's name, s2's own is lq's); the child reads "to-server" and
 * answers "ack", the root reads "to-client" and "ack"; c2 and s2 exchange
 * a record each way; both listeners still take new clients and the socket
 * file is still there.
 *
 * Corruptions: "data" (the root eats a byte of "to-client"), "peer" (the
 * root closes s2: c2's exchange fails).
 */
#include "zdtm.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static socklen_t addr_of(struct sockaddr_un *a, const char *name, int abstract)
{
	size_t n = strlen(name);

	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	memcpy(a->sun_path + !!abstract, name, n);
	return abstract ? offsetof(struct sockaddr_un, sun_path) + 1 + n : sizeof(*a);
}

/* Whether `fd`'s own (or peer's) address is `want` (`wlen` bytes). */
static int named(int fd, int peer, const struct sockaddr_un *want, socklen_t wlen)
{
	struct sockaddr_un got;
	socklen_t len = sizeof(got);

	memset(&got, 0, sizeof(got));
	if ((peer ? getpeername : getsockname)(fd, (struct sockaddr *)&got, &len))
		return 0;
	if (want->sun_path[0] == 0)
		return len == wlen && !memcmp(&got, want, wlen);
	return !strcmp(got.sun_path, want->sun_path);
}

static int unnamed_peer(int fd)
{
	struct sockaddr_un got;
	socklen_t len = sizeof(got);

	return !getpeername(fd, (struct sockaddr *)&got, &len) && len == sizeof(sa_family_t);
}

static int child(int s1, int go, const struct sockaddr_un *a)
{
	char m[16], c;

	while (read(go, &c, 1) < 0 && errno == EINTR)
		;
	if (!named(s1, 0, a, sizeof(*a)) || !unnamed_peer(s1))
		return 1;
	if (zdtm_read_exact(s1, m, 9) || memcmp(m, "to-server", 9))
		return 2;
	return write(s1, "ack", 3) == 3 ? 0 : 3;
}

static void take_new_client(int l, int type, struct sockaddr_un *a, socklen_t len, const char *who)
{
	int c = socket(AF_UNIX, type, 0), s;

	ZCHECK(!connect(c, (void *)a, len) && (s = accept(l, NULL, NULL)) >= 0, "%s: no new client: %s", who, strerror(errno));
	close(c);
}

int main(int argc, char **argv)
{
	char path[64], abs[64], cabs[64], m[16], c;
	uint32_t h = 2166136261u;
	struct sockaddr_un a, b, cb;
	socklen_t la, lb, lc;
	int ls, lq, c1, s1, c2, s2, go[2], status, timeout_set;
	struct stat st;
	pid_t kid;

	zdtm_init(argc, argv);
	for (const char *p = zdtm_dir; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	snprintf(path, sizeof(path), "/tmp/zdtm-uc-%08x.sock", h);
	snprintf(abs, sizeof(abs), "zdtm-uc-%08x", h);
	snprintf(cabs, sizeof(cabs), "zdtm-uc-%08x-c", h);
	unlink(path);
	la = addr_of(&a, path, 0);
	lb = addr_of(&b, abs, 1);
	lc = addr_of(&cb, cabs, 1);
	ls = socket(AF_UNIX, SOCK_STREAM, 0);
	lq = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	c1 = socket(AF_UNIX, SOCK_STREAM, 0);
	c2 = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (bind(ls, (void *)&a, la) || listen(ls, 5) || bind(lq, (void *)&b, lb) || listen(lq, 3) || connect(c1, (void *)&a, la) ||
	    (s1 = accept(ls, NULL, NULL)) < 0 || bind(c2, (void *)&cb, lc) || connect(c2, (void *)&b, lb) ||
	    (s2 = accept(lq, NULL, NULL)) < 0 || pipe(go))
		zdtm_fail("set up: %s", strerror(errno));
	if (write(c1, "to-server", 9) != 9 || write(s1, "to-client", 9) != 9)
		zdtm_fail("queue: %s", strerror(errno));
	kid = fork();
	if (kid < 0)
		zdtm_fail("fork: %s", strerror(errno));
	if (kid == 0)
		_exit(child(s1, go[0], &a));
	close(s1);
	zdtm_ready();
	zdtm_wait();

	/* A broken connection must fail the checks, not hang them. */
	timeout_set = setsockopt(c1, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 3, 0 }, sizeof(struct timeval)) ||
		      setsockopt(c2, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 3, 0 }, sizeof(struct timeval));
	ZCHECK(!timeout_set, "SO_RCVTIMEO: %s", strerror(errno));
	if (zdtm_corrupt("data") && read(c1, &c, 1) != 1)
		zdtm_log("corrupt: nothing to eat");
	if (zdtm_corrupt("peer"))
		close(s2);

	ZCHECK(named(c1, 1, &a, la), "c1's peer is not %s", path);
	ZCHECK(named(c2, 0, &cb, lc) && named(c2, 1, &b, lb), "c2 lost its name or its peer's");
	ZCHECK(zdtm_corrupt("peer") || (named(s2, 0, &b, lb) && named(s2, 1, &cb, lc)), "s2 lost its name or its peer's");
	if (write(go[1], "g", 1) != 1)
		zdtm_err("tell the child: %s", strerror(errno));
	ZCHECK(zdtm_read_exact(c1, m, 12) == 0 && !memcmp(m, "to-clientack", 12), "c1 read \"%.12s\"", m);
	while (waitpid(kid, &status, 0) < 0 && errno == EINTR)
		;
	ZCHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	ZCHECK(send(c2, "ping", 4, 0) == 4 && recv(s2, m, sizeof(m), 0) == 4 && send(s2, "pong!", 5, 0) == 5 &&
		       recv(c2, m, sizeof(m), 0) == 5 && !memcmp(m, "pong!", 5),
	       "no record exchange over c2");
	ZCHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode), "%s is gone", path);
	take_new_client(ls, SOCK_STREAM, &a, la, "path");
	take_new_client(lq, SOCK_SEQPACKET, &b, lb, "abstract");
	unlink(path);
	zdtm_finish();
}
