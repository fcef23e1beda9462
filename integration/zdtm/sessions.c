/*
 * sessions (cf. zdtm session00..03, pid00): sessions and process groups.
 *
 *   R  (root)  setsid() (if needed)        sid R  pgid R
 *   A  child   setsid()                    sid A  pgid A
 *   A1 of A    setpgid(0,0)                sid A  pgid A1
 *   A2 of A    stays in A's group          sid A  pgid A
 *   B  child   setpgid(0,0)                sid R  pgid B
 *   B1 of B    setpgid(0,0)                sid R  pgid B1
 *   D  of B    setpgid(0,R): grandparent's group   sid R  pgid R
 *   C  child   setpgid(0,B): a sibling's group     sid R  pgid B
 *
 * Every process sends a setup record {name, pid, ppid, pgid, sid} to the
 * root over a pipe and sleeps in zdtm_wait().  After the harness's SIGTERM
 * the root forwards SIGTERM to all seven; each re-reads its ids, compares
 * them with its setup record and sends a verification record; A and B wait
 * for their children before exiting (so the children's ppid is still
 * valid when checked).  The root checks all records, the relationships in
 * the table above, its own ids, its view of getpgid()/getsid() of every
 * other process, and reaps A, B and C (exit status 0).
 *
 * Corruptions: "pgid" (C moves to its own group), "sid" (A2 calls setsid).
 */
#include "zdtm.h"
#include <sys/wait.h>

struct rec {
	char name[4];
	int phase; /* 0 setup, 1 verification */
	pid_t pid, ppid, pgid, sid;
	char msg[160];
};

enum { A, A1, A2, B, B1, D, C, N };
static const char *names[N] = { "A", "A1", "A2", "B", "B1", "D", "C" };
static int wfd;

static void fill(struct rec *r, const char *name, int phase)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->phase = phase;
	r->pid = getpid();
	r->ppid = getppid();
	r->pgid = getpgid(0);
	r->sid = getsid(0);
}

static int send_rec(const struct rec *r)
{
	return write(wfd, r, sizeof(*r)) == sizeof(*r) ? 0 : -1;
}

/* Body of every non-root process; kids are waited for before exiting. */
static void member(const char *name, const pid_t *kids, int nkids)
{
	struct rec before, after;
	int rc = 0;

	fill(&before, name, 0);
	send_rec(&before);
	zdtm_wait();

	if (strcmp(name, "C") == 0 && zdtm_corrupt("pgid"))
		setpgid(0, 0);
	if (strcmp(name, "A2") == 0 && zdtm_corrupt("sid"))
		setsid();

	fill(&after, name, 1);
	if (after.pid != before.pid || after.ppid != before.ppid || after.pgid != before.pgid ||
	    after.sid != before.sid)
		snprintf(after.msg, sizeof(after.msg),
			 "%s: pid/ppid/pgid/sid %d/%d/%d/%d, expected %d/%d/%d/%d", name, (int)after.pid,
			 (int)after.ppid, (int)after.pgid, (int)after.sid, (int)before.pid, (int)before.ppid,
			 (int)before.pgid, (int)before.sid);
	send_rec(&after);
	for (int i = 0; i < nkids; i++) {
		int st;
		if (zdtm_waitpid(kids[i], &st, 0, 10000) != kids[i] || !WIFEXITED(st) || WEXITSTATUS(st))
			rc = 1;
	}
	_exit(rc);
}

static pid_t spawn(void (*fn)(void))
{
	pid_t p = fork();

	if (p < 0)
		zdtm_fail("fork: %s", strerror(errno));
	if (p == 0) {
		fn();
		_exit(1);
	}
	return p;
}

static void run_a1(void)
{
	setpgid(0, 0);
	member("A1", NULL, 0);
}

static void run_a2(void)
{
	member("A2", NULL, 0);
}

static void run_a(void)
{
	pid_t kids[2];

	setsid();
	kids[0] = spawn(run_a1);
	kids[1] = spawn(run_a2);
	member("A", kids, 2);
}

static void run_b1(void)
{
	setpgid(0, 0);
	member("B1", NULL, 0);
}

static pid_t root_pgid;

static void run_d_real(void)
{
	if (setpgid(0, root_pgid) < 0)
		zdtm_log("D: setpgid(0, %d): %s", (int)root_pgid, strerror(errno));
	member("D", NULL, 0);
}

static void run_b(void)
{
	pid_t kids[2];

	setpgid(0, 0);
	kids[0] = spawn(run_b1);
	kids[1] = spawn(run_d_real);
	member("B", kids, 2);
}

static pid_t b_pgid;

static void run_c(void)
{
	if (setpgid(0, b_pgid) < 0)
		zdtm_log("C: setpgid(0, %d): %s", (int)b_pgid, strerror(errno));
	member("C", NULL, 0);
}

static int idx(const char *name)
{
	for (int i = 0; i < N; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

static int filled(const struct rec *out)
{
	int n = 0;

	for (int i = 0; i < N; i++)
		n += out[i].pid != 0;
	return n;
}

/*
 * Read records of the given phase into out[] until all N slots are filled,
 * or slot stop_at is, or 10 s pass.  Returns the number of filled slots.
 */
static int collect(int rfd, int phase, struct rec *out, int stop_at)
{
	while (filled(out) < N && !(stop_at >= 0 && out[stop_at].pid)) {
		struct rec r;
		int i;
		if (zdtm_read_full(rfd, &r, sizeof(r), 10000) != sizeof(r))
			break;
		i = idx(r.name);
		if (i < 0 || r.phase != phase) {
			zdtm_err("bad record '%.4s' phase %d", r.name, r.phase);
			continue;
		}
		out[i] = r;
	}
	return filled(out);
}

int main(int argc, char **argv)
{
	struct rec setup[N], ver[N];
	pid_t a, b, c, me, ppid;
	int p[2], got, st;

	zdtm_init(argc, argv);
	/* the harness already starts every test as a session leader */
	if (getsid(0) != getpid() && setsid() < 0)
		zdtm_fail("setsid: %s", strerror(errno));
	me = getpid();
	ppid = getppid();
	root_pgid = getpgid(0);
	if (pipe(p) < 0)
		zdtm_fail("pipe: %s", strerror(errno));
	wfd = p[1];
	memset(setup, 0, sizeof(setup));

	a = spawn(run_a);
	b = spawn(run_b);
	/* C joins B's group: wait until B has created it */
	collect(p[0], 0, setup, B);
	if (setup[B].pid != b)
		zdtm_fail("no setup record from B");
	b_pgid = b;
	c = spawn(run_c);
	got = collect(p[0], 0, setup, -1);
	if (got != N)
		zdtm_fail("only %d of %d setup records", got, N);

	zdtm_ready();
	zdtm_wait();

	ZCHECK(getpid() == me && getppid() == ppid, "root pid/ppid %d/%d, expected %d/%d", (int)getpid(),
	       (int)getppid(), (int)me, (int)ppid);
	ZCHECK(getpgid(0) == me && getsid(0) == me, "root pgid/sid %d/%d, expected %d", (int)getpgid(0),
	       (int)getsid(0), (int)me);
	/* the root's view of the others, before they exit */
	for (int i = 0; i < N; i++) {
		pid_t pg = getpgid(setup[i].pid), s = getsid(setup[i].pid);
		ZCHECK(pg == setup[i].pgid && s == setup[i].sid, "root sees %s (%d) in pgid/sid %d/%d, expected %d/%d",
		       names[i], (int)setup[i].pid, (int)pg, (int)s, (int)setup[i].pgid, (int)setup[i].sid);
	}

	for (int i = 0; i < N; i++)
		if (kill(setup[i].pid, SIGTERM) < 0)
			zdtm_err("kill(%s=%d): %s", names[i], (int)setup[i].pid, strerror(errno));
	memset(ver, 0, sizeof(ver));
	got = collect(p[0], 1, ver, -1);
	ZCHECK(got == N, "only %d of %d verification records", got, N);
	for (int i = 0; i < N; i++) {
		if (!ver[i].pid)
			continue;
		if (ver[i].msg[0])
			zdtm_err("%s", ver[i].msg);
	}
#define REL(cond, ...) ZCHECK(!ver[A].pid || !ver[B].pid || (cond), __VA_ARGS__)
	REL(ver[A].ppid == me && ver[A].sid == ver[A].pid && ver[A].pgid == ver[A].pid, "A is not a session leader");
	REL(ver[A1].ppid == ver[A].pid && ver[A1].pgid == ver[A1].pid && ver[A1].sid == ver[A].pid,
	    "A1 ppid/pgid/sid %d/%d/%d", (int)ver[A1].ppid, (int)ver[A1].pgid, (int)ver[A1].sid);
	REL(ver[A2].ppid == ver[A].pid && ver[A2].pgid == ver[A].pid && ver[A2].sid == ver[A].pid,
	    "A2 ppid/pgid/sid %d/%d/%d", (int)ver[A2].ppid, (int)ver[A2].pgid, (int)ver[A2].sid);
	REL(ver[B].ppid == me && ver[B].pgid == ver[B].pid && ver[B].sid == me, "B ppid/pgid/sid %d/%d/%d",
	    (int)ver[B].ppid, (int)ver[B].pgid, (int)ver[B].sid);
	REL(ver[B1].ppid == ver[B].pid && ver[B1].pgid == ver[B1].pid && ver[B1].sid == me,
	    "B1 ppid/pgid/sid %d/%d/%d", (int)ver[B1].ppid, (int)ver[B1].pgid, (int)ver[B1].sid);
	REL(ver[D].ppid == ver[B].pid && ver[D].pgid == me && ver[D].sid == me, "D ppid/pgid/sid %d/%d/%d",
	    (int)ver[D].ppid, (int)ver[D].pgid, (int)ver[D].sid);
	REL(ver[C].ppid == me && ver[C].pgid == ver[B].pid && ver[C].sid == me, "C ppid/pgid/sid %d/%d/%d",
	    (int)ver[C].ppid, (int)ver[C].pgid, (int)ver[C].sid);

	if (zdtm_waitpid(a, &st, 0, 10000) != a || !WIFEXITED(st) || WEXITSTATUS(st))
		zdtm_err("A (or its children) did not exit cleanly");
	if (zdtm_waitpid(b, &st, 0, 10000) != b || !WIFEXITED(st) || WEXITSTATUS(st))
		zdtm_err("B (or its children) did not exit cleanly");
	if (zdtm_waitpid(c, &st, 0, 10000) != c || !WIFEXITED(st) || WEXITSTATUS(st))
		zdtm_err("C did not exit cleanly");
	zdtm_finish();
}
