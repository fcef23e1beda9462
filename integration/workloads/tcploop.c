/* Test workload: two processes of one container talking over a loopback
 * TCP connection. The parent (pid 1) listens on 127.0.0.1:7000; a child
 * connects. Every 100 ms the parent sends a 64 KiB block of a pattern
 * seeded by the iteration and the child checks it and answers the block's
 * checksum, which the parent checks. A failure, or the end of the
 * connection, counts as an error.
 * Every iteration the parent writes "iter=N pid=P errors=E" to /tmp/state
 * (atomic rename) and to stdout, like counter.c. Built static by the
 * tests; needs loopback up in its network namespace. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "report.h"

#define BLOCK 65536

static unsigned char block[BLOCK];

static void fill(uint32_t seed)
{
	for (int i = 0; i < BLOCK; i++)
		block[i] = (unsigned char)((seed * 2654435761u) >> (i % 24)) ^ (unsigned char)i;
}

static uint32_t sum(void)
{
	uint32_t s = 0;

	for (int i = 0; i < BLOCK; i++)
		s = s * 31 + block[i];
	return s;
}

static int full(int fd, void *b, size_t n, int out)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = out ? write(fd, (char *)b + done, n - done) : read(fd, (char *)b + done, n - done);
		if (r <= 0)
			return -1;
		done += r;
	}
	return 0;
}

static int child(struct sockaddr_in *a)
{
	int c = socket(AF_INET, SOCK_STREAM, 0);
	uint32_t it, s;

	while (connect(c, (struct sockaddr *)a, sizeof(*a)))
		usleep(10000);
	for (;;) {
		if (full(c, &it, 4, 0) || full(c, block, BLOCK, 0))
			return 1;
		s = sum();
		fill(it);
		if (sum() != s)
			s = 0; /* the parent counts the error */
		if (full(c, &s, 4, 1))
			return 1;
	}
}

int main(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(7000), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	unsigned long iter = 0, errors = 0;
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1, s;

	signal(SIGPIPE, SIG_IGN);
	if (setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4))
		return 1;
	if (fork() == 0)
		_exit(child(&a));
	s = accept(l, NULL, NULL);
	if (s < 0)
		return 2;
	for (;;) {
		uint32_t it = (uint32_t)iter, got;

		fill(it);
		if (full(s, &it, 4, 1) || full(s, block, BLOCK, 1) || full(s, &got, 4, 0) || got != sum())
			errors++;
		iter++;
		report("/tmp/state", "iter=%lu pid=%d errors=%lu\n", iter, getpid(), errors);
		usleep(100000);
	}
}
