//! sitegate: a guardrail sidecar proxy for JSON HTTP APIs.
//!
//! The pure core (`config`, `policy`, `guard`, `error`, `headers`) takes values and
//! returns values; the I/O edges (`server`, `pipeline`, `body`, `upstream`, `reload`,
//! `admin`, `observe`, `demo`) move bytes and time. DESIGN.md §3 draws the map.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod admin;
pub(crate) mod audit;
pub mod body;
pub mod commands;
pub mod config;
pub mod demo;
pub mod error;
pub(crate) mod fallback;
pub mod guard;
pub mod headers;
pub mod observe;
pub(crate) mod pipeline;
pub mod policy;
pub mod redact;
pub(crate) mod reload;
pub mod server;
pub mod state;
pub(crate) mod upstream;
