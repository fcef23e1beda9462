//! Delegated verbs reach the chosen runtime unchanged: argv (with the global
//! flags re-serialised), stdin/stdout/stderr, extra fds, the exit code, and
//! the process itself (exec in place, so the caller stays the parent).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use stasis_integration::{stasis_bin, TempDir};

/// A fake runtime that records what it was given, then exits 42.
fn fake_runtime(dir: &TempDir) -> String {
    let script = dir.path().join("fake-runtime");
    let out = dir.path().display();
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             printf '%s\\n' \"$@\" > {out}/argv\n\
             readlink /proc/self/fd/3 > {out}/fd3\n\
             echo \"$PPID\" > {out}/ppid\n\
             cat > {out}/stdin\n\
             echo to-stdout; echo to-stderr >&2\n\
             exit 42\n"
        ),
    )
    .expect("write fake runtime");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    script.to_str().expect("utf-8 path").to_string()
}

/// Run `stasis ARGS` from a shell that opens fd 3 and feeds stdin, and
/// records its own pid (the expected parent of the runtime).
fn run_through_shell(dir: &TempDir, env: &[(&str, &str)], args: &str) -> std::process::Output {
    let script = format!(
        "exec 3</etc/hostname; echo input | {} {args}; rc=$?; echo $$ > {}/shell; exit $rc",
        stasis_bin().display(),
        dir.path().display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .env_remove("STASIS_RUNTIME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run /bin/sh")
}

fn read(dir: &TempDir, name: &str) -> String {
    fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

#[test]
fn runtime_binary_gets_argv_stdio_fds_and_exit_code() {
    let dir = TempDir::new("stasis-delegate");
    let fake = fake_runtime(&dir);
    let out = run_through_shell(
        &dir,
        &[],
        &format!(
            "--root /r --log /l.json --log-format json --criu /usr/sbin/criu --systemd-cgroup \
             --rootless=false --runtime-binary {fake} create --preserve-fds 1 -bundle /b -x -- id"
        ),
    );
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
    let argv: Vec<String> = read(&dir, "argv").lines().map(str::to_string).collect();
    assert_eq!(
        argv,
        [
            "--root=/r",
            "--log=/l.json",
            "--log-format=json",
            "--rootless=false",
            "--systemd-cgroup",
            "create",
            "--preserve-fds",
            "1",
            "-bundle",
            "/b",
            "-x",
            "--",
            "id",
        ]
    );
    assert_eq!(read(&dir, "fd3").trim(), "/etc/hostname");
    assert_eq!(read(&dir, "stdin"), "input\n");
    assert_eq!(
        read(&dir, "ppid"),
        read(&dir, "shell"),
        "runtime was not exec'd in place"
    );
}

#[test]
fn stasis_runtime_env_chooses_the_runtime_and_the_flag_wins() {
    let dir = TempDir::new("stasis-delegate");
    let fake = fake_runtime(&dir);
    let out = run_through_shell(&dir, &[("STASIS_RUNTIME", &fake)], "kill c1 9");
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    assert_eq!(read(&dir, "argv"), "kill\nc1\n9\n");

    let out = run_through_shell(
        &dir,
        &[("STASIS_RUNTIME", &fake)],
        "--runtime-binary /nonexistent state c1",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot run runtime /nonexistent: no such file or directory"),
        "{stderr}"
    );
}
