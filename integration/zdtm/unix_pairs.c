/*
 * unix_pairs (cf. zdtm sockets00, socket_queues, sk-unix-unconn): Unix
 * socket pairs, as event loops use them.
 *
 * State built before the checkpoint:
 *  - s1: SOCK_STREAM pair, both ends in the root; 400000 bytes of a pattern
 *    and "hello" queued on s1[0] (written in three pieces on s1[1], whose
 *    send buffer was raised to 1 MiB for it: more than a default buffer
 *    holds), 1000 bytes queued on s1[1];
 *  - s2: SOCK_SEQPACKET pair; s2[0] in the root, s2[1] in a child, which
 *    blocks in recv() on it;
 *  - s3: SOCK_STREAM pair; 10 bytes queued on s3[0], then s3[1] shut down
 *    for writing;
 *  - s4: SOCK_DGRAM pair, s4[0] non-blocking.
 *
 * Verified after SIGTERM: s1[0] holds exactly the pattern and "hello",
 * s1[1] the 1000 bytes, and the two ends still talk; s3[0] reads its 10
 * bytes then end of file, and writing on s3[1] fails with EPIPE; s4 carries
 * a datagram both ways and s4[0] is non-blocking; every end has its type.
 * The child receives "ping" as one record on s2 and answers "pong!" (one
 * record, no more), then exits 0.
 *
 * Corruptions: "data" (one queued byte eaten), "shut" (s1[0] shut down for
 * writing), "child" (the root closes s2[0]: the child sees end of file).
 */
#include "zdtm.h"
#include <sys/socket.h>
#include <sys/wait.h>

#define Q1 400000
static char q1[Q1 + 5], buf[Q1 + 64];

static int type_of(int fd)
{
	int t = -1;
	socklen_t len = sizeof(t);

	getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &len);
	return t;
}

/* Everything readable on `fd` now (made non-blocking). */
static ssize_t drain(int fd, char *out, size_t n)
{
	ssize_t got = 0, r;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	while ((size_t)got < n && (r = read(fd, out + got, n - got)) > 0)
		got += r;
	return got;
}

static int child(int s)
{
	char m[16];
	ssize_t n;

	while ((n = recv(s, m, sizeof(m), 0)) < 0 && errno == EINTR)
		;
	if (n != 4 || memcmp(m, "ping", 4))
		return 1;
	return send(s, "pong!", 5, 0) == 5 ? 0 : 2;
}

int main(int argc, char **argv)
{
	int s1[2], s2[2], s3[2], s4[2], status;
	char b1000[1000], m[16];
	pid_t kid;

	zdtm_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, s1) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, s2) ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, s3) || socketpair(AF_UNIX, SOCK_DGRAM, 0, s4))
		zdtm_fail("socketpair: %s", strerror(errno));
	zdtm_fill(q1, Q1, 7, 0);
	memcpy(q1 + Q1, "hello", 5);
	zdtm_fill(b1000, sizeof(b1000), 9, 0);
	if (setsockopt(s1[1], SOL_SOCKET, SO_SNDBUFFORCE, &(int){ 1 << 20 }, sizeof(int)) || write(s1[1], q1, 7000) != 7000 || write(s1[1], q1 + 7000, Q1 - 7000) != Q1 - 7000 || write(s1[1], "hello", 5) != 5 ||
	    write(s1[0], b1000, sizeof(b1000)) != sizeof(b1000) || write(s3[1], "0123456789", 10) != 10 || shutdown(s3[1], SHUT_WR) ||
	    fcntl(s4[0], F_SETFL, O_NONBLOCK))
		zdtm_fail("set up: %s", strerror(errno));
	kid = fork();
	if (kid == 0) {
		close(s2[0]);
		_exit(child(s2[1]));
	}
	close(s2[1]);
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("data"))
		(void)!read(s1[0], m, 1);
	if (zdtm_corrupt("shut"))
		shutdown(s1[0], SHUT_WR);
	if (zdtm_corrupt("child"))
		close(s2[0]);

	ZCHECK(type_of(s1[0]) == SOCK_STREAM && type_of(s1[1]) == SOCK_STREAM && type_of(s2[0]) == SOCK_SEQPACKET &&
		       type_of(s3[0]) == SOCK_STREAM && type_of(s4[0]) == SOCK_DGRAM && type_of(s4[1]) == SOCK_DGRAM,
	       "socket types");
	ZCHECK(fcntl(s4[0], F_GETFL) & O_NONBLOCK, "s4[0] is blocking");
	ZCHECK(drain(s1[0], buf, sizeof(buf)) == Q1 + 5 && !memcmp(buf, q1, Q1 + 5), "s1[0]: queued bytes differ");
	ZCHECK(drain(s1[1], buf, sizeof(buf)) == sizeof(b1000) && !memcmp(buf, b1000, sizeof(b1000)), "s1[1]: queued bytes differ");
	ZCHECK(write(s1[0], "abc", 3) == 3 && zdtm_read_full(s1[1], m, 3, 2000) == 3 && !memcmp(m, "abc", 3), "s1 ends no longer talk");
	ZCHECK(zdtm_read_full(s3[0], m, 10, 2000) == 10 && !memcmp(m, "0123456789", 10), "s3[0]: queued bytes differ");
	ZCHECK(read(s3[0], m, 1) == 0, "s3[0]: no end of file after the queued bytes");
	ZCHECK(write(s3[1], "x", 1) < 0 && errno == EPIPE, "s3[1]: writes after shutdown");
	ZCHECK(send(s4[1], "d1", 2, 0) == 2 && zdtm_wait_readable(s4[0], 2000) > 0 && recv(s4[0], m, sizeof(m), 0) == 2, "s4: no datagram");
	ZCHECK(send(s4[0], "d22", 3, 0) == 3 && recv(s4[1], m, sizeof(m), 0) == 3 && !memcmp(m, "d22", 3), "s4: no datagram back");
	if (send(s2[0], "ping", 4, 0) != 4)
		zdtm_err("s2: send: %s", strerror(errno));
	else
		ZCHECK(zdtm_wait_readable(s2[0], 5000) > 0 && recv(s2[0], m, 4, 0) == 4 && !memcmp(m, "pong", 4) &&
			       recv(s2[0], m, sizeof(m), MSG_DONTWAIT) <= 0, /* nothing, or the child's close */
		       "s2: the answer is not one record");
	if (zdtm_waitpid(kid, &status, 0, 5000) != kid || !WIFEXITED(status))
		zdtm_err("child did not exit");
	else
		ZCHECK(WEXITSTATUS(status) == 0, "child: exit %d", WEXITSTATUS(status));
	zdtm_finish();
}
