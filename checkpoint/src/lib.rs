//! stasis-checkpoint: the checkpoint/restore engine.
//!
//! It takes a live process tree and writes an image ([`dump`](fn@dump)); it takes an
//! image and recreates the tree with the same pids in a fresh pid namespace
//! ([`restore`](fn@restore)). It knows nothing of OCI: the runtime (`stasis`) decides
//! which tree, which namespaces and which stdio.
//!
//! Unsafe code and raw system calls live in [`sys`] (and the restore stub,
//! which runs in freshly forked children).

pub mod dump;
pub mod error;
mod events;
mod files;
mod ipc;
mod locks;
pub mod freezer;
pub mod image;
pub mod inspect;
mod checksum;
mod copier;
mod memory;
pub mod model;
mod precopy;
pub mod proc;
pub mod restore;
mod sched;
mod seize;
mod shmem;
mod sockets;
pub mod sys;
mod task;
mod tcp;
mod timers;
mod unix;
pub mod validate;

pub use dump::{dump, DumpOptions, DumpStats, FrozenHook};
pub use restore::{restore, RestoreOptions, Restored};
pub use error::{Error, Result};
