/*
 * tcp_listener DIR: holds a TCP socket listening on 127.0.0.1 (a kind of
 * state the engine cannot save) and a file lock-free counter. Every 20 ms it
 * writes "n=<count> port=<port>" to DIR/state, and it answers one byte to
 * every connection, so a test can check that it runs on, unharmed, after a
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
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	char path[512], tmp[512];
	unsigned long n = 0;

	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 8) || getsockname(s, (struct sockaddr *)&a, &len))
		return 1;
	snprintf(path, sizeof(path), "%s/state", dir);
	snprintf(tmp, sizeof(tmp), "%s/state.tmp", dir);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c >= 0) {
			(void)!write(c, "y", 1);
			close(c);
		}
		FILE *f = fopen(tmp, "w");
		if (f) {
			fprintf(f, "n=%lu port=%d\n", ++n, ntohs(a.sin_port));
			fclose(f);
			rename(tmp, path);
		}
		usleep(20000);
	}
}
