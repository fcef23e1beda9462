/*
 * tcp_loopback (cf. zdtm socket-tcp, socket-tcp6, socket-tcp-nfconntrack):
 * established TCP connections whose two ends are both in the tree.
 *
 * State built before the checkpoint:
 *  - a listener on 127.0.0.1 (ephemeral port); the root connects to it
 *    (c1) and a child holds the accepted end (s1);
 *  - the root wrote 300000 bytes of a pattern on c1 that the child has not
 *    read (they fill the child's receive queue and the root's send queue);
 *  - the child wrote "hello" on s1, not read by the root;
 *  - an IPv6 connection over ::1 with both ends in the root (c2, s2),
 *    idle, TCP_NODELAY on c2.
 *
 * Verified after SIGTERM: every address is as before; the child reads the
 * 300000 bytes, checks the pattern and answers "ack"; the root reads
 * "hello" then "ack"; 1 MiB more goes from the root to the child, which
 * checks it and reports over its exit status; c2 and s2 exchange a ping
 * both ways; TCP_NODELAY is still on for c2; the listener accepts a new
 * connection.
 *
 * Connections end with a reset (SO_LINGER 0): a restore in the same network
 * namespace, as the leave-running run does, would otherwise find their
 * ports held by TIME_WAIT sockets for a minute.
 *
 * Corruptions: "data" (the root eats a byte of "hello"), "close" (the
 * child shuts s1 down: the root sees the end of the stream).
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define Q 300000
#define MORE (1 << 20)
static char q[Q], buf[MORE];

static void addr_of(int fd, int peer, char *out, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[64];
	int port;

	if ((peer ? getpeername : getsockname)(fd, (struct sockaddr *)&ss, &len)) {
		snprintf(out, n, "?");
		return;
	}
	if (ss.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	} else {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	snprintf(out, n, "%s:%d", host, port);
}

/* The addresses of both ends of `fd`, as "local>peer". */
static void ends(int fd, char *out, size_t n)
{
	char l[96], p[96];

	addr_of(fd, 0, l, sizeof(l));
	addr_of(fd, 1, p, sizeof(p));
	snprintf(out, n, "%s>%s", l, p);
}

/* Closes `fd` with a reset instead of a FIN: no TIME_WAIT socket is left
 * on its port, where a restore of the same image in this network
 * namespace (the leave-running run) binds it again. */
static void close_reset(int fd)
{
	struct linger l = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

static int child(int s, int go)
{
	char c;

	if (write(s, "hello", 5) != 5)
		return 10;
	while (read(go, &c, 1) < 0 && errno == EINTR)
		;
	if (c == 'x') {
		shutdown(s, SHUT_RDWR);
		return 0;
	}
	if (zdtm_read_exact(s, buf, Q) || zdtm_check_pat(buf, Q, 5, 0) >= 0)
		return 11;
	if (write(s, "ack", 3) != 3)
		return 12;
	if (zdtm_read_exact(s, buf, MORE) || zdtm_check_pat(buf, MORE, 6, 0) >= 0)
		return 13;
	close_reset(s);
	return 0;
}

static int listen_on(int family, int *port)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct sockaddr_storage got;
	socklen_t len = sizeof(got);
	int l = socket(family, SOCK_STREAM, 0);

	if (l < 0 || bind(l, family == AF_INET ? (struct sockaddr *)&a4 : (struct sockaddr *)&a6,
			  family == AF_INET ? sizeof(a4) : sizeof(a6)) ||
	    listen(l, 8) || getsockname(l, (struct sockaddr *)&got, &len))
		zdtm_fail("listen: %s", strerror(errno));
	*port = family == AF_INET ? ntohs(((struct sockaddr_in *)&got)->sin_port) : ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
	return l;
}

static int connect_to(int family, int port)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int c = socket(family, SOCK_STREAM, 0);

	if (c < 0 || connect(c, family == AF_INET ? (struct sockaddr *)&a4 : (struct sockaddr *)&a6,
			     family == AF_INET ? sizeof(a4) : sizeof(a6)))
		zdtm_fail("connect: %s", strerror(errno));
	return c;
}

int main(int argc, char **argv)
{
	int l1, l2, c1, s1, c2, s2, c3, a3, p1, p2, go[2], status, one = 1, v = 0;
	char e1[256], e2[256], e3[256], now[256], m[8];
	socklen_t len = sizeof(v);
	size_t sent = 0;
	pid_t kid;

	zdtm_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	l1 = listen_on(AF_INET, &p1);
	l2 = listen_on(AF_INET6, &p2);
	c1 = connect_to(AF_INET, p1);
	s1 = accept(l1, NULL, NULL);
	c2 = connect_to(AF_INET6, p2);
	s2 = accept(l2, NULL, NULL);
	if (s1 < 0 || s2 < 0 || pipe(go) || setsockopt(c2, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		zdtm_fail("accept: %s", strerror(errno));
	kid = fork();
	if (kid < 0)
		zdtm_fail("fork: %s", strerror(errno));
	if (kid == 0) {
		close(c1);
		_exit(child(s1, go[0]));
	}
	close(s1);
	zdtm_fill(q, Q, 5, 0);
	fcntl(c1, F_SETFL, O_NONBLOCK);
	while (sent < Q) {
		ssize_t w = write(c1, q + sent, Q - sent);
		if (w > 0) {
			sent += w;
		} else if (errno == EAGAIN) {
			/* The child's receive queue and our send queue are full: that
			 * is as much as the connection holds. */
			break;
		} else {
			zdtm_fail("write: %s", strerror(errno));
		}
	}
	zdtm_log("%zu of %d bytes queued on c1", sent, Q);
	fcntl(c1, F_SETFL, 0);
	/* The child's "hello" arrives on c1. */
	for (int i = 0; i < 200; i++) {
		int n = 0;

		ioctl(c1, FIONREAD, &n);
		if (n >= 5)
			break;
		usleep(5000);
	}
	ends(c1, e1, sizeof(e1));
	ends(c2, e2, sizeof(e2));
	ends(s2, e3, sizeof(e3));
	zdtm_ready();
	zdtm_wait();

	/* A broken connection must fail the checks, not hang them. */
	setsockopt(c1, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 3, 0 }, sizeof(struct timeval));
	if (zdtm_corrupt("data") && read(c1, m, 1) != 1)
		zdtm_log("corrupt: nothing to eat");
	if (write(go[1], zdtm_corrupt("close") ? "x" : "g", 1) != 1)
		zdtm_err("tell the child: %s", strerror(errno));

	ends(c1, now, sizeof(now));
	ZCHECK(!strcmp(now, e1), "c1 %s, was %s", now, e1);
	ends(c2, now, sizeof(now));
	ZCHECK(!strcmp(now, e2), "c2 %s, was %s", now, e2);
	ends(s2, now, sizeof(now));
	ZCHECK(!strcmp(now, e3), "s2 %s, was %s", now, e3);
	if (sent < Q && write(c1, q + sent, Q - sent) != (ssize_t)(Q - sent))
		zdtm_err("the rest of the pattern: %s", strerror(errno));
	ZCHECK(zdtm_read_exact(c1, m, 8) == 0 && !memcmp(m, "helloack", 8), "c1 read \"%.8s\", want \"helloack\"", m);
	zdtm_fill(buf, MORE, 6, 0);
	ZCHECK(write(c1, buf, MORE) == MORE, "1 MiB more on c1: %s", strerror(errno));
	while (waitpid(kid, &status, 0) < 0 && errno == EINTR)
		;
	ZCHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);

	ZCHECK(write(c2, "ping", 4) == 4 && zdtm_read_exact(s2, m, 4) == 0 && !memcmp(m, "ping", 4), "ping over ::1");
	ZCHECK(write(s2, "pong", 4) == 4 && zdtm_read_exact(c2, m, 4) == 0 && !memcmp(m, "pong", 4), "pong over ::1");
	ZCHECK(!getsockopt(c2, IPPROTO_TCP, TCP_NODELAY, &v, &len) && v, "TCP_NODELAY off on c2");
	c3 = connect_to(AF_INET, p1);
	a3 = accept(l1, NULL, NULL);
	ZCHECK(a3 >= 0, "the listener accepts no more: %s", strerror(errno));
	close_reset(c1);
	close_reset(c2);
	close_reset(s2);
	close_reset(c3);
	close_reset(a3);
	zdtm_finish();
}
