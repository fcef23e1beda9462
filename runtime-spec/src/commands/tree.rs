//! `stasis tree dump|restore`: the engine on a bare process tree, for people
//! without containers.

use anyhow::Context;
use stasis_checkpoint::{image, DumpOptions, RestoreOptions};

use crate::cli::{GlobalOpts, TreeDumpOpts, TreeRestoreOpts};

pub fn dump(global: &GlobalOpts, opts: &TreeDumpOpts) -> anyhow::Result<i32> {
    image::create_image_dir(&opts.image_path)
        .with_context(|| format!("create image directory {}", opts.image_path.display()))?;
    let dopts = DumpOptions {
        image_dir: opts.image_path.clone(),
        leave_running: opts.leave_running,
        own_ipc_ns: false,
        copy_threads: 2,
        freezer: None,
        pre_copy: true,
        pre_dump: opts.pre_dump,
        parent: opts.parent_path.clone(),
        frozen_hook: None,
    };
    let st = stasis_checkpoint::dump(opts.pid, &dopts).with_context(|| format!("dump process tree {}", opts.pid))?;
    if global.debug {
        eprintln!(
            "dumped {} tasks, {} threads, {} bytes of pages; frozen {} us (collect {} us, copy {} us)",
            st.tasks, st.threads, st.pages_bytes, st.frozen_us, st.memdump_us, st.memwrite_us
        );
        eprintln!("phases (us since freeze): {:?}", st.phases);
    }
    Ok(0)
}

pub fn restore(global: &GlobalOpts, opts: &TreeRestoreOpts) -> anyhow::Result<i32> {
    let ropts = RestoreOptions { image_dir: opts.image_path.clone(), inherit_stdio: true, ..Default::default() };
    let r = stasis_checkpoint::restore(&ropts)
        .with_context(|| format!("restore process tree from {}", opts.image_path.display()))?;
    if global.debug {
        eprintln!("restored {} pages ({} by userfaultfd copy) in {} us", r.pages_restored, r.uffd_pages, r.restore_us);
    }
    println!("{}", r.root_pid);
    Ok(0)
}
