//! A container confined the way podman confines one: a seccomp filter,
//! capabilities without CAP_SYS_ADMIN and *no* no_new_privs. Installing a
//! filter needs one of the latter two, so a restore that put the
//! credentials back before the filter could not reinstall it (it failed
//! with EACCES). The restored counter must run on with the same filter
//! count, capability sets and no_new_privs as before.

#[allow(dead_code)] // the counter helpers this test does not use
mod cr;

use cr::*;
use stasis_integration::{unique_id, Runtime, TempDir};

/// `Field:` lines of /proc/PID/status that describe its confinement.
fn confinement(pid: i64) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .filter(|l| {
            ["Seccomp:", "Seccomp_filters:", "NoNewPrivs:", "CapEff:", "CapPrm:", "CapBnd:"]
                .iter()
                .any(|f| l.starts_with(f))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn seccomp_without_no_new_privs_or_cap_sys_admin_is_restored() {
    let (rt, bundle, dir) = (Runtime::stasis(), counter_bundle(), TempDir::new("stasis-seccomp"));
    bundle.edit_config(|c| {
        c["process"]["noNewPrivileges"] = false.into();
        // runc spec's capabilities: no CAP_SYS_ADMIN.
        let caps = &c["process"]["capabilities"]["effective"];
        assert!(!caps.to_string().contains("CAP_SYS_ADMIN"), "{caps}");
        c["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }]
        });
    });
    let id = unique_id("cr-seccomp");
    let _guard = rt.adopt(&id);
    let run = run_counter(&rt, &bundle, &id);
    let before = confinement(rt.state(&id)["pid"].as_i64().unwrap());
    assert!(before.contains(&"Seccomp:\t2".to_string()), "{before:?}");
    assert!(before.contains(&"NoNewPrivs:\t0".to_string()), "{before:?}");

    let image = dir.path().join("img");
    rt.exec(&argv(&[&"checkpoint", &"--image-path", &image, &id])).ok();
    let at = progress(&bundle).expect("state");
    assert_gone(&rt, &id, &bundle);
    drop(run);

    let restored = restore(&rt, &image, &bundle, &id, &[]);
    assert_eq!(restored.code, 0, "restore: {}", restored.stderr);
    let later = wait_beyond(&bundle, at.iter + 2);
    assert_eq!((later.pid, later.errors), (1, 0));
    assert_eq!(confinement(rt.state(&id)["pid"].as_i64().unwrap()), before);
    rt.exec(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped", WAIT);
    rt.exec(&["delete", &id]).ok();
    assert_gone(&rt, &id, &bundle);
    drop(restored);
}
