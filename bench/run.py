#!/usr/bin/env python3
"""`make bench`: stasis against runc+CRIU on the shared workloads, plus the
scaling series (memory 256 MiB..4 GiB, trees of 50..800 processes).

Drives every runtime through the runc command line with the shared harness
(../shared/bench/bench.py, or $BENCH_DIR/bench.py), so both are measured the
same way in one run. runc+CRIU is measured with the first `criu` that
passes `criu check` on this kernel: the one on the PATH, or else one built
by bench/criu.py from Debian's newer CRIU source (Debian 12's CRIU 3.17
fails on kernel 6.13+). Only when neither works (or with --no-criu) do the
ratios use the reference figures of runc 1.1.5 + CRIU 4.2 measured on a
machine of this kind (shared/bench/README.md).

After the tables it lists each timed checkpoint with the VM's kernel CPU
time and free page reporting during it, the two things that tell a slow
run on this VM from a slow engine.

  bench/run.py [--reps N] [--only NAME ...] [--no-scaling] [--no-criu] [--json FILE]
"""
import argparse, importlib.util, json, os, shutil, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.environ.get("BENCH_DIR", os.path.join(os.path.dirname(ROOT), "shared", "bench"))
STASIS = os.environ.get("STASIS", os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/stasis"))

# runc 1.1.5 + CRIU 4.2, median of 3 (shared/bench/README.md); downtime is
# the lower bound of the range given there.
REFERENCE = {
    "loop": (0.25, 0.18, 0.2, None),
    "memhog256": (0.28, 0.47, 256, 270),
    "memhog2048": (1.36, 1.45, 2050, 2400),
    "tree200": (1.49, 0.64, 15, None),
    "pipeline": (0.19, 0.20, 0.3, None),
}

SCALING = {
    "memhog1024": (["/bin/memhog", "1024", "/tmp"], "memhog"),
    "memhog4096": (["/bin/memhog", "4096", "/tmp"], "memhog"),
    "tree50": (["/bin/tree", "50", "/tmp"], "tree"),
    "tree800": (["/bin/tree", "800", "/tmp"], "tree"),
}
SERIES = ["memhog256", "memhog1024", "memhog2048", "memhog4096", "tree50", "tree200", "tree800"]


def load_harness():
    path = os.path.join(BENCH_DIR, "bench.py")
    if not os.path.exists(path):
        sys.exit("bench: %s not found (set BENCH_DIR)" % path)
    spec = importlib.util.spec_from_file_location("shared_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.WORKLOADS.update(SCALING)
    return mod


def with_criu(skip):
    """Puts a working criu first on the PATH (runc runs `criu`); False if none."""
    if skip:
        print("bench: --no-criu: ratios against the reference figures", flush=True)
        return False
    if not shutil.which("runc"):
        print("bench: no runc on the PATH: ratios against the reference figures", flush=True)
        return False
    import criu  # bench/criu.py, beside this script (the first entry of sys.path)
    d, why = criu.find_or_build(lambda m: print(m, flush=True))
    if d is None:
        print("bench: no working criu (%s): ratios against the reference figures" % why, flush=True)
        return False
    os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")
    version = subprocess.run(["criu", "--version"], capture_output=True, text=True).stdout.split()
    print("bench: runc+CRIU measured with %s (CRIU %s)" % (shutil.which("criu"), version[1] if len(version) > 1 else "?"), flush=True)
    return True


# This VM's free page reporting (virtio): what it has handed back to the
# host, in KiB. A report during a checkpoint of large memory went with
# copies several times slower, at several times the kernel CPU (README,
# "Speed"); `None` where the module is absent.
REPORTED = "/sys/module/page_reporting/parameters/reported_kib"


def vm_counters():
    """(kernel CPU seconds of all CPUs so far, KiB reported to the host or None)."""
    with open("/proc/stat") as f:
        ticks = int(f.readline().split()[3])  # "cpu user nice system ..."
    try:
        with open(REPORTED) as f:
            reported = int(f.read())
    except (OSError, ValueError):
        reported = None
    return ticks / os.sysconf("SC_CLK_TCK"), reported


def watch_checkpoints(h):
    """Wraps the harness's `sh` so that each timed checkpoint (not the
    leave-running one) records the kernel CPU time it took and what the VM
    reported to its host meanwhile; returns the list they are appended to."""
    seen = []
    plain = h.sh

    def sh(cmd, **kw):
        if "checkpoint" not in cmd or "--leave-running" in cmd:
            return plain(cmd, **kw)
        (cpu0, rep0) = vm_counters()
        r = plain(cmd, **kw)
        (cpu1, rep1) = vm_counters()
        if r.returncode == 0:  # as the harness, which times only those
            mib = None if rep0 is None or rep1 is None else round((rep1 - rep0) / 1024)
            seen.append([round(cpu1 - cpu0, 2), mib])
        return r

    h.sh = sh
    return seen


def med(xs):
    return statistics.median(xs) if xs else None


def merge(into, r):
    """Adds one repetition's result `r` (from the harness's run_one) to `into`."""
    for k, v in r.items():
        if isinstance(v, list):
            into.setdefault(k, []).extend(v)
        elif k in ("reps", "verified"):
            into[k] += v


def fmt(x, p=3):
    return "-" if x is None else "%.*f" % (p, x)


def ratio(ours, theirs):
    return "-" if ours is None or theirs in (None, 0) else "%.2f" % (ours / theirs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "3")))
    ap.add_argument("--only", action="append")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-criu", action="store_true", help="do not measure runc+CRIU; compare with the reference figures")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results.json"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    h = load_harness()
    bins = h.build_workloads()
    names = a.only or (list(REFERENCE) + ([] if a.no_scaling else [n for n in SERIES if n not in REFERENCE]))
    criu_measured = with_criu(a.no_criu)
    runtimes = [STASIS] + (["runc"] if criu_measured else [])
    rows = {}
    watched = watch_checkpoints(h)
    for w in names:
        for rep in range(a.reps):
            # One repetition at a time, the runtimes taking turns to go
            # first: how warm this VM's free memory is depends on what ran
            # just before, and the first runs of a workload meet the coldest.
            for rt in (runtimes if rep % 2 == 0 else runtimes[::-1]):
                watched.clear()
                r = h.run_one(rt, w, 1, bins)
                r["ckpt_vm"] = list(watched)  # [kernel CPU s, MiB reported] per checkpoint
                print(json.dumps(r), flush=True)
                merge(rows.setdefault((w, rt), {"runtime": rt, "workload": w, "reps": 0, "verified": 0}), r)
    with open(a.json, "w") as f:
        json.dump([r for r in rows.values()], f, indent=1)

    base = "runc+CRIU measured in the same run" if criu_measured else "the reference figures of runc 1.1.5 + CRIU 4.2 (runc+CRIU not measured)"
    print("\nstasis against %s; ratio = stasis / runc+CRIU (lower is better)\n" % base)
    print("| workload | ckpt_s | rest_s | img_MiB | downtime_ms | verified | ckpt ratio | restore ratio | img ratio | downtime ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for w in names:
        s = rows[(w, STASIS)]
        ours = (med(s["ckpt_s"]), med(s["restore_s"]), med(s["image_mib"]), med(s["downtime_ms"]))
        if criu_measured:
            c = rows[(w, "runc")]
            theirs = (med(c["ckpt_s"]), med(c["restore_s"]), med(c["image_mib"]), med(c["downtime_ms"]))
        else:
            theirs = REFERENCE.get(w, (None, None, None, None))
        print("| %s | %s | %s | %s | %s | %d/%d | %s | %s | %s | %s |" % (
            w, fmt(ours[0]), fmt(ours[1]), fmt(ours[2], 1), fmt(ours[3], 1), s["verified"], s["reps"],
            ratio(ours[0], theirs[0]), ratio(ours[1], theirs[1]), ratio(ours[2], theirs[2]), ratio(ours[3], theirs[3])))
    if criu_measured:
        print("\nrunc+CRIU in this run:\n")
        print("| workload | ckpt_s | rest_s | img_MiB | downtime_ms | verified |")
        print("|---|---|---|---|---|---|")
        for w in names:
            c = rows[(w, "runc")]
            print("| %s | %s | %s | %s | %s | %d/%d |" % (
                w, fmt(med(c["ckpt_s"])), fmt(med(c["restore_s"])), fmt(med(c["image_mib"]), 1),
                fmt(med(c["downtime_ms"]), 1), c["verified"], c["reps"]))
    print("\nEach checkpoint, in the order run: wall time, kernel CPU time of the whole VM")
    print("during it, and what the VM's free page reporting handed back to the host meanwhile:\n")
    for w in names:
        for rt in runtimes:
            r = rows[(w, rt)]
            name = "stasis" if rt == STASIS else "runc+CRIU"
            reps = ["%.2f s (%.2f s sys%s)" % (t, c, "" if m is None else ", %d MiB reported" % m)
                    for t, (c, m) in zip(r.get("ckpt_s", []), r.get("ckpt_vm", []))]
            print("  %s %s: %s" % (w, name, "; ".join(reps)))
    bad = [w for w in names if rows[(w, STASIS)]["verified"] != rows[(w, STASIS)]["reps"]]
    if bad:
        print("\nnot verified on every repetition: %s" % ", ".join(bad))
        for w in bad:
            print("  %s: %s" % (w, rows[(w, STASIS)]["errors"][:3]))
        sys.exit(1)


if __name__ == "__main__":
    main()
