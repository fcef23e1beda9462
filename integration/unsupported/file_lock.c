/*
 * file_lock DIR KIND: holds a file lock on DIR/locked (KIND flock, posix or
 * ofd: a kind of state the engine cannot save) on fd 3 and counts. Every
 * 20 ms it writes "n=<count>" to DIR/state, so a test can check that it
 * runs on, and still holds its lock, after a refused checkpoint.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *dir = argc > 2 ? argv[1] : "/tmp";
	const char *kind = argc > 2 ? argv[2] : "flock";
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char path[512], tmp[512];
	unsigned long n = 0;
	int fd, r;

	snprintf(path, sizeof(path), "%s/locked", dir);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd != 3)
		return 1;
	if (!strcmp(kind, "flock"))
		r = flock(fd, LOCK_EX);
	else if (!strcmp(kind, "posix"))
		r = fcntl(fd, F_SETLK, &fl);
	else
		r = fcntl(fd, F_OFD_SETLK, &fl);
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
