/*
 * file_lock DIR KIND: holds, on fd 3, a lock the engine cannot save (KIND
 * lease: a read lease on DIR/locked; fifo: a flock lock on the FIFO
 * DIR/fifo) and counts. Every 20 ms it writes "n=<count>" to DIR/state, so
 * a test can check that it runs on, and still holds its lock, after a
 * refused checkpoint.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *dir = argc > 2 ? argv[1] : "/tmp";
	const char *kind = argc > 2 ? argv[2] : "lease";
	char path[512], tmp[512];
	unsigned long n = 0;
	int fd, r;

	if (!strcmp(kind, "lease")) {
		snprintf(path, sizeof(path), "%s/locked", dir);
		fd = open(path, O_RDONLY | O_CREAT, 0600);
		if (fd != 3)
			return 1;
		r = fcntl(fd, F_SETLEASE, F_RDLCK);
	} else {
		snprintf(path, sizeof(path), "%s/fifo", dir);
		if (mkfifo(path, 0600))
			return 1;
		fd = open(path, O_RDWR);
		if (fd != 3)
			return 1;
		r = flock(fd, LOCK_EX);
	}
	if (r < 0)
		return 2;
	snprintf(path, sizeof(path), "%s/state", dir);
	snprintf(tmp, sizeof(tmp), "%s/state.tmp", dir);
	for (;;) {
		FILE *f = fopen(tmp, "w");
		if (f) {
			fprintf(f, "n=%lu\n", ++n);
			fclose(f);
			rename(tmp, path);
		}
		usleep(20000);
	}
}
