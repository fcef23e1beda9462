//! `stasis inspect IMAGE_DIR`: print the tree, mappings and fds of an image.

use anyhow::Context;
use stasis_checkpoint::{image, inspect};

use crate::cli::{GlobalOpts, InspectOpts};

pub fn run(_global: &GlobalOpts, opts: &InspectOpts) -> anyhow::Result<i32> {
    let (inv, tree, _pages) =
        image::open_image(&opts.image_dir).with_context(|| format!("read image {}", opts.image_dir.display()))?;
    print!("{}", inspect::describe(&tree, &inv));
    Ok(0)
}
