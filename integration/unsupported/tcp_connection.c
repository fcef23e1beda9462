/*
 * tcp_connection DIR: holds a TCP socket listening on 127.0.0.1 (fd 3) and
 * an established connection to it, both ends (fds 4 and 5): a connection is
 * state the engine cannot save. Every 20 ms it sends a byte through that
 * connection and reads it back (it exits if that fails), answers one byte
 * to every new connection, and writes "n=<count> port=<port>" to
 * DIR/state, so a test can check that it runs on, unharmed, after a
 * refused checkpoint.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0), p;
	char path[512], tmp[512], b;
	unsigned long n = 0;

	if (s != 3 || c != 4 || bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 8) ||
	    getsockname(s, (struct sockaddr *)&a, &len) || connect(c, (struct sockaddr *)&a, sizeof(a)))
		return 1;
	p = accept(s, NULL, NULL);
	if (p != 5 || fcntl(s, F_SETFL, O_NONBLOCK))
		return 1;
	snprintf(path, sizeof(path), "%s/state", dir);
	snprintf(tmp, sizeof(tmp), "%s/state.tmp", dir);
	for (;;) {
		int nc = accept(s, NULL, NULL);
		if (nc >= 0) {
			(void)!write(nc, "y", 1);
			close(nc);
		}
		if (write(c, "x", 1) != 1 || read(p, &b, 1) != 1 || b != 'x')
			return 2;
		FILE *f = fopen(tmp, "w");
		if (f) {
			fprintf(f, "n=%lu port=%d\n", ++n, ntohs(a.sin_port));
			fclose(f);
			rename(tmp, path);
		}
		usleep(20000);
	}
}
