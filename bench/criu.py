#!/usr/bin/env python3
"""A working CRIU for the side-by-side benchmark.

Debian 12's CRIU 3.17 fails `criu check` on kernels 6.13 and later (the
`[vvar_vclock]` mapping, fixed in CRIU 4.1). If no `criu` on the PATH
passes, this builds the CRIU of Debian's unstable (or testing) suite from
its upstream source tarball, fetched from deb.debian.org and checked the
way apt checks it: the suite's InRelease must carry a good signature from
the Debian archive keyring (gpgv), Sources.xz must match the hash that
InRelease lists, and the tarball the hash that Sources lists. Only the
`criu` binary is built (`make criu`), into .build/criu/; nothing is
installed system-wide but the build dependencies (apt).

  bench/criu.py           print the directory holding a working `criu`
                          (building it if needed), or why there is none

`find_or_build()` is what bench/run.py calls.
"""
import hashlib, lzma, os, re, shutil, subprocess, sys, tarfile, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, ".build", "criu")
MIRROR = "http://deb.debian.org/debian"
SUITES = ["sid", "trixie"]
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BUILD_DEPS = ["gcc", "make", "pkg-config", "protobuf-c-compiler", "libprotobuf-c-dev", "protobuf-compiler",
              "libprotobuf-dev", "python3-protobuf", "libnl-3-dev", "libnet1-dev", "libcap-dev", "libbsd-dev",
              "uuid-dev", "libgnutls28-dev", "gpgv", "debian-archive-keyring", "xz-utils"]


class Unavailable(Exception):
    pass


def works(criu):
    """True when `criu check` passes (as root) for the binary `criu`."""
    try:
        return subprocess.run([criu, "check"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.read()
    except OSError as e:
        raise Unavailable("fetch %s: %s" % (url, e))


def signed_release(suite, work):
    """The suite's Release text, once gpgv has checked InRelease's signature."""
    path = os.path.join(work, suite + "-InRelease")
    with open(path, "wb") as f:
        f.write(fetch("%s/dists/%s/InRelease" % (MIRROR, suite)))
    out = os.path.join(work, suite + "-Release")
    r = subprocess.run(["gpgv", "--keyring", KEYRING, "--output", out, path], capture_output=True, text=True)
    if r.returncode:
        raise Unavailable("%s InRelease: bad or missing signature: %s" % (suite, r.stderr.strip()[-300:]))
    with open(out) as f:
        return f.read()


def listed_sha256(text, name):
    """The SHA256 a Release ("SHA256:") or Sources ("Checksums-Sha256:") text lists for `name`."""
    sect = re.split(r"^(?:SHA256|Checksums-Sha256):$", text, maxsplit=1, flags=re.M)
    if len(sect) < 2:
        raise Unavailable("no SHA256 list")
    for line in sect[1].splitlines()[1:]:
        if not line.startswith(" "):
            break
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return parts[0]
    raise Unavailable("%s is not listed" % name)


def checked(data, sha, what):
    if hashlib.sha256(data).hexdigest() != sha:
        raise Unavailable("%s does not match its listed SHA256" % what)
    return data


def criu_source(suite, work):
    """(version, orig tarball bytes) of the suite's criu source package."""
    release = signed_release(suite, work)
    sources = checked(fetch("%s/dists/%s/main/source/Sources.xz" % (MIRROR, suite)),
                      listed_sha256(release, "main/source/Sources.xz"), "Sources.xz")
    text = lzma.decompress(sources).decode("utf-8", "replace")
    stanza = next((s for s in text.split("\n\n") if s.startswith("Package: criu\n")), None)
    if stanza is None:
        raise Unavailable("%s has no criu source package" % suite)
    version = re.search(r"^Version: (?:\d+:)?([^\s-]+)", stanza, re.M).group(1)
    if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) < (4, 1):
        raise Unavailable("%s has criu %s, older than 4.1" % (suite, version))
    directory = re.search(r"^Directory: (\S+)", stanza, re.M).group(1)
    orig = next((n for n in re.findall(r"^ [0-9a-f]{64} \d+ (\S+)$", stanza, re.M) if ".orig.tar." in n), None)
    if orig is None:
        raise Unavailable("criu %s lists no upstream tarball" % version)
    data = checked(fetch("%s/%s/%s" % (MIRROR, directory, orig)), listed_sha256(stanza, orig), orig)
    return version, data


def build(log=print):
    """Builds criu into OUT/bin; returns that directory."""
    if os.geteuid() != 0:
        raise Unavailable("building CRIU needs root (apt-get)")
    missing = [p for p in BUILD_DEPS if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout != "install ok installed"]
    if missing:
        log("bench: installing CRIU's build dependencies: %s" % " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "--no-install-recommends"] + missing
        r = subprocess.run(install, env=env, capture_output=True, text=True)
        if r.returncode:  # package lists missing or stale: update once and retry
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            r = subprocess.run(install, env=env, capture_output=True, text=True)
        if r.returncode:
            raise Unavailable("apt-get install failed: %s" % r.stderr.strip()[-300:])
    work = os.path.join(OUT, "src")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    errors = []
    for suite in SUITES:
        try:
            version, data = criu_source(suite, work)
            break
        except Unavailable as e:
            errors.append(str(e))
    else:
        raise Unavailable("; ".join(errors))
    log("bench: building CRIU %s (Debian %s source, signature and hashes checked)" % (version, suite))
    tar = os.path.join(work, "criu.tar.xz")
    with open(tar, "wb") as f:
        f.write(data)
    with tarfile.open(tar) as t:
        # The "data" filter refuses links and paths out of `work` (Python 3.11.4+).
        t.extractall(work, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    src = next(os.path.join(work, d) for d in os.listdir(work) if d.startswith("criu-"))
    r = subprocess.run(["make", "-j%d" % (os.cpu_count() or 2), "criu"], cwd=src, capture_output=True, text=True)
    if r.returncode:
        raise Unavailable("make criu failed: %s" % r.stderr.strip()[-500:])
    bindir = os.path.join(OUT, "bin")
    os.makedirs(bindir, exist_ok=True)
    shutil.copy2(os.path.join(src, "criu", "criu"), os.path.join(bindir, "criu"))
    shutil.rmtree(work, ignore_errors=True)
    return bindir


def find_or_build(log=print):
    """The directory of a `criu` that passes `criu check`, or None (and why)."""
    on_path = shutil.which("criu")
    if on_path and works(on_path):
        return os.path.dirname(on_path), None
    built = os.path.join(OUT, "bin")
    if not works(os.path.join(built, "criu")):
        try:
            built = build(log)
        except Unavailable as e:
            return None, str(e)
        except Exception as e:  # a broken tarball, a missing tool: no criu, the bench goes on
            return None, "building CRIU: %s: %s" % (type(e).__name__, e)
    if not works(os.path.join(built, "criu")):
        return None, "the CRIU built in %s fails `criu check`" % built
    return built, None


if __name__ == "__main__":
    d, why = find_or_build(lambda m: print(m, file=sys.stderr))
    if d is None:
        sys.exit("no working criu: %s" % why)
    print(d)
