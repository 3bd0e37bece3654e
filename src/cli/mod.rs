//! The binary's own modules (declared by `main.rs`, not part of the library): flag groups,
//! the commands' flags, and terminal output.

pub(crate) mod commands;
pub(crate) mod flags;
pub(crate) mod output;
