/*
 * tcp_connection DIR PORT: holds a TCP socket listening on 127.0.0.1 (fd 3)
 * and a connection to an echo server outside the tree on 127.0.0.1:PORT
 * (fd 4): a connection whose peer is not in the checkpoint is state the
 * engine cannot save. Every 20 ms it sends a byte through that connection
 * and reads the echo (it exits if that fails), answers one byte to every
 * new connection, and writes "n=<count> port=<port>" (its listener's) to
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
	struct sockaddr_in echo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
	char path[512], tmp[512], b;
	unsigned long n = 0;

	echo.sin_port = htons(argc > 2 ? atoi(argv[2]) : 7);
	if (s != 3 || c != 4 || bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 8) ||
	    getsockname(s, (struct sockaddr *)&a, &len) || connect(c, (struct sockaddr *)&echo, sizeof(echo)) ||
	    fcntl(s, F_SETFL, O_NONBLOCK))
		return 1;
	snprintf(path, sizeof(path), "%s/state", dir);
	snprintf(tmp, sizeof(tmp), "%s/state.tmp", dir);
	for (;;) {
		int nc = accept(s, NULL, NULL);
		if (nc >= 0) {
			(void)!write(nc, "y", 1);
			close(nc);
		}
		if (write(c, "x", 1) != 1 || read(c, &b, 1) != 1 || b != 'x')
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
