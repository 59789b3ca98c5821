//! One test per rule of `/work/shared/spec/win32-virtual-memory.md`, each run on every
//! backend (see `common::backend_tests!`). The modules follow the sections of the spec.

#[path = "../common/mod.rs"]
mod common;

mod alloc;
mod commit_limit;
mod constants;
mod free;
mod guard;
mod lock;
mod protect;
mod query;
mod reset;
mod space;
mod write_watch;
