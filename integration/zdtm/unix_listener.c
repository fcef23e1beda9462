/*
 * unix_listener (cf. zdtm sk-unix-listen): listening Unix sockets, as
 * PostgreSQL, PHP-FPM or supervisord hold them.
 *
 * State built before the checkpoint:
 *  - ls: SOCK_STREAM listener bound to /tmp/zdtm-ul-<hash>.sock (a socket
 *    path must fit in 108 bytes, the state dir may not; <hash> is of the
 *    state dir), mode 0660, backlog 5;
 *  - lq: SOCK_SEQPACKET listener on the abstract name "zdtm-ul-<hash>";
 *  - a pair-free life: no connection is open.
 *
 * Verified after SIGTERM: both are listening with their names; the socket
 * file is a socket of mode 0660; a client connects to each, the listener
 * accepts, and a message goes through each connection both ways. The
 * socket file is removed at the end.
 *
 * Corruptions: "file" (the socket file removed: no client gets in), "mode"
 * (0600).
 */
#include "zdtm.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static socklen_t addr_of(struct sockaddr_un *a, const char *name, int abstract)
{
	size_t n = strlen(name);

	if (n + 1 >= sizeof(a->sun_path))
		zdtm_fail("socket name too long: %s", name);
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	memcpy(a->sun_path + !!abstract, name, n);
	return abstract ? offsetof(struct sockaddr_un, sun_path) + 1 + n : sizeof(*a);
}

static void talk(int l, int type, struct sockaddr_un *a, socklen_t len, const char *who)
{
	int c = socket(AF_UNIX, type, 0), s;
	char m[8];

	if (connect(c, (void *)a, len)) {
		zdtm_err("%s: connect: %s", who, strerror(errno));
		close(c);
		return;
	}
	s = accept(l, NULL, NULL);
	ZCHECK(s >= 0 && send(c, "hi", 2, 0) == 2 && recv(s, m, sizeof(m), 0) == 2 && send(s, "ok", 2, 0) == 2 &&
		       recv(c, m, sizeof(m), 0) == 2 && !memcmp(m, "ok", 2),
	       "%s: no exchange", who);
	close(s);
	close(c);
}

int main(int argc, char **argv)
{
	char path[64], abs[64];
	uint32_t h = 2166136261u;
	struct sockaddr_un a, b, got;
	socklen_t la, lb, lg;
	struct stat st;
	int ls, lq, v;

	zdtm_init(argc, argv);
	for (const char *c = zdtm_dir; *c; c++)
		h = (h ^ (unsigned char)*c) * 16777619u;
	snprintf(path, sizeof(path), "/tmp/zdtm-ul-%08x.sock", h);
	snprintf(abs, sizeof(abs), "zdtm-ul-%08x", h);
	unlink(path);
	la = addr_of(&a, path, 0);
	lb = addr_of(&b, abs, 1);
	ls = socket(AF_UNIX, SOCK_STREAM, 0);
	lq = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (bind(ls, (void *)&a, la) || chmod(path, 0660) || listen(ls, 5) || bind(lq, (void *)&b, lb) || listen(lq, 3))
		zdtm_fail("set up: %s", strerror(errno));
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("file"))
		unlink(path);
	if (zdtm_corrupt("mode"))
		chmod(path, 0600);

	lg = sizeof(got);
	ZCHECK(getsockname(ls, (void *)&got, &lg) == 0 && !strcmp(got.sun_path, path), "ls is not bound to %s", path);
	lg = sizeof(got);
	ZCHECK(getsockname(lq, (void *)&got, &lg) == 0 && lg == lb && !memcmp(&got, &b, lb), "lq lost its abstract name");
	lg = sizeof(v);
	ZCHECK(getsockopt(ls, SOL_SOCKET, SO_ACCEPTCONN, &v, &lg) == 0 && v == 1, "ls is not listening");
	ZCHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == 0660, "%s is not a socket of mode 0660", path);
	talk(ls, SOCK_STREAM, &a, la, "path");
	talk(lq, SOCK_SEQPACKET, &b, lb, "abstract");
	unlink(path);
	zdtm_finish();
}
