//! Verbs with their own logic. Everything else is delegated (`crate::delegate`).

pub mod checkpoint;
pub mod delete;
pub mod inspect;
pub mod restore;
pub mod tree;
