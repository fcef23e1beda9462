/*
 * inet_sockets (cf. zdtm socket_listen, socket_udp): the sockets of an idle
 * server.
 *
 * State built before the checkpoint:
 *  - l4: TCP listener on 127.0.0.1 (port from the kernel), SO_REUSEADDR,
 *    TCP_NODELAY, backlog 7;
 *  - l6: TCP listener on [::1], IPV6_V6ONLY, SO_REUSEPORT, O_NONBLOCK;
 *  - ua: UDP socket on 127.0.0.1, SO_BROADCAST;
 *  - ub: UDP socket on 127.0.0.1, connected to ua;
 *  - fr: a fresh TCP socket, never bound, SO_KEEPALIVE.
 *
 * Verified after SIGTERM: every local address (and ub's peer) is what it
 * was, fr is still unbound; the options above are set and the others not;
 * l4's backlog (TCP_INFO) is 7 and l6 is non-blocking; a new client
 * connects to l4 and to l6 and each accepted connection carries a message
 * both ways; fr itself connects to l4; a datagram sent on ub (connected)
 * arrives at ua from ub's address.
 *
 * Corruptions: "port" (l4 listens again on another port), "option"
 * (TCP_NODELAY cleared), "peer" (ub disconnected).
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int l4, l6, ua, ub, fr;
static struct sockaddr_in6 a4[5]; /* local addresses, large enough for both families */

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);

	getsockopt(fd, level, name, &v, &len);
	return v;
}

static void name_of(int fd, void *sa)
{
	socklen_t len = sizeof(struct sockaddr_in6);

	memset(sa, 0, sizeof(struct sockaddr_in6));
	getsockname(fd, sa, &len);
}

static int bound(int family, int type, const char *ip)
{
	int fd = socket(family, type, 0);
	struct sockaddr_in6 sa6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in sa4 = { .sin_family = AF_INET };

	if (fd < 0)
		zdtm_fail("socket: %s", strerror(errno));
	if (family == AF_INET6) {
		int one = 1;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		inet_pton(AF_INET6, ip, &sa6.sin6_addr);
		if (bind(fd, (void *)&sa6, sizeof(sa6)))
			zdtm_fail("bind [%s]: %s", ip, strerror(errno));
	} else {
		inet_pton(AF_INET, ip, &sa4.sin_addr);
		if (bind(fd, (void *)&sa4, sizeof(sa4)))
			zdtm_fail("bind %s: %s", ip, strerror(errno));
	}
	return fd;
}

/* A client connects to `lfd`'s address; one message each way. */
static void round_trip(int lfd, const char *who)
{
	struct sockaddr_in6 sa;
	socklen_t len = sizeof(sa);
	int c, s;
	char buf[16] = "";

	name_of(lfd, &sa);
	c = socket(sa.sin6_family, SOCK_STREAM, 0);
	if (connect(c, (void *)&sa, sa.sin6_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in))) {
		zdtm_err("%s: connect: %s", who, strerror(errno));
		close(c);
		return;
	}
	if (zdtm_wait_readable(lfd, 2000) <= 0 || (s = accept(lfd, (void *)&sa, &len)) < 0) {
		zdtm_err("%s: accept: %s", who, strerror(errno));
		close(c);
		return;
	}
	ZCHECK(write(c, "ping", 4) == 4 && zdtm_read_full(s, buf, 4, 2000) == 4 && !memcmp(buf, "ping", 4), "%s: ping lost", who);
	ZCHECK(write(s, "pong", 4) == 4 && zdtm_read_full(c, buf, 4, 2000) == 4 && !memcmp(buf, "pong", 4), "%s: pong lost", who);
	close(s);
	close(c);
}

int main(int argc, char **argv)
{
	struct sockaddr_in6 now, peer;
	socklen_t plen = sizeof(peer);
	struct tcp_info ti;
	socklen_t tlen = sizeof(ti);
	char buf[16];
	int one = 1, fds[5];

	zdtm_init(argc, argv);
	l4 = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l4, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(l4, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	{
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (bind(l4, (void *)&sa, sizeof(sa)) || listen(l4, 7))
			zdtm_fail("l4: %s", strerror(errno));
	}
	l6 = bound(AF_INET6, SOCK_STREAM, "::1");
	if (listen(l6, 128) || fcntl(l6, F_SETFL, O_NONBLOCK))
		zdtm_fail("l6: %s", strerror(errno));
	ua = bound(AF_INET, SOCK_DGRAM, "127.0.0.1");
	setsockopt(ua, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
	ub = bound(AF_INET, SOCK_DGRAM, "127.0.0.1");
	name_of(ua, &now);
	if (connect(ub, (void *)&now, sizeof(struct sockaddr_in)))
		zdtm_fail("ub: %s", strerror(errno));
	fr = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fr, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	fds[0] = l4, fds[1] = l6, fds[2] = ua, fds[3] = ub, fds[4] = fr;
	for (int i = 0; i < 5; i++)
		name_of(fds[i], &a4[i]);
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("port")) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		close(l4);
		l4 = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(l4, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		bind(l4, (void *)&sa, sizeof(sa));
		listen(l4, 7);
		fds[0] = l4;
	}
	if (zdtm_corrupt("option"))
		setsockopt(l4, IPPROTO_TCP, TCP_NODELAY, &(int){ 0 }, sizeof(int));
	if (zdtm_corrupt("peer")) {
		struct sockaddr sa = { .sa_family = AF_UNSPEC };
		connect(ub, &sa, sizeof(sa));
	}

	for (int i = 0; i < 5; i++) {
		name_of(fds[i], &now);
		ZCHECK(!memcmp(&now, &a4[i], sizeof(now)), "socket %d: local address changed (port %d, was %d)", i,
		       ntohs(now.sin6_port), ntohs(a4[i].sin6_port));
	}
	ZCHECK(a4[4].sin6_port == 0, "fr is bound");
	ZCHECK(getpeername(ub, (void *)&peer, &plen) == 0 && !memcmp(&peer, &a4[2], sizeof(struct sockaddr_in)), "ub is not connected to ua");
	ZCHECK(opt(l4, SOL_SOCKET, SO_REUSEADDR) == 1 && opt(l4, IPPROTO_TCP, TCP_NODELAY) == 1, "l4 options");
	ZCHECK(opt(l4, SOL_SOCKET, SO_ACCEPTCONN) == 1 && opt(l6, SOL_SOCKET, SO_ACCEPTCONN) == 1, "not listening");
	ZCHECK(opt(l6, IPPROTO_IPV6, IPV6_V6ONLY) == 1 && opt(l6, SOL_SOCKET, SO_REUSEPORT) == 1, "l6 options");
	ZCHECK(opt(l6, SOL_SOCKET, SO_REUSEADDR) == 0 && opt(l6, IPPROTO_TCP, TCP_NODELAY) == 0, "l6 has options it never set");
	ZCHECK(fcntl(l6, F_GETFL) & O_NONBLOCK, "l6 is blocking");
	ZCHECK(opt(ua, SOL_SOCKET, SO_BROADCAST) == 1 && opt(ub, SOL_SOCKET, SO_BROADCAST) == 0, "SO_BROADCAST");
	ZCHECK(opt(fr, SOL_SOCKET, SO_KEEPALIVE) == 1, "fr lost SO_KEEPALIVE");
	ZCHECK(getsockopt(l4, IPPROTO_TCP, TCP_INFO, &ti, &tlen) == 0 && ti.tcpi_sacked == 7, "l4 backlog %u", ti.tcpi_sacked);
	round_trip(l4, "l4");
	round_trip(l6, "l6");
	{
		struct sockaddr_in sa;
		socklen_t len = sizeof(sa);
		name_of(l4, &now);
		ZCHECK(connect(fr, (void *)&now, sizeof(struct sockaddr_in)) == 0 && accept(l4, (void *)&sa, &len) >= 0,
		       "fr cannot connect to l4: %s", strerror(errno));
	}
	memset(&peer, 0, sizeof(peer));
	plen = sizeof(peer);
	ZCHECK(send(ub, "dgram", 5, 0) == 5 && zdtm_wait_readable(ua, 2000) > 0 &&
		       recvfrom(ua, buf, sizeof(buf), 0, (void *)&peer, &plen) == 5 && !memcmp(buf, "dgram", 5) &&
		       !memcmp(&peer, &a4[3], sizeof(struct sockaddr_in)),
	       "the datagram from ub did not arrive at ua from ub's address");
	zdtm_finish();
}
