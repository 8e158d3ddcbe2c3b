//! End-to-end tests: the real proxy on 127.0.0.1:0 in front of a real upstream (the
//! embedded stand-in, or the Flask app under tests/legacy_app), talking HTTP.

mod access;
mod binary;
mod canonical;
mod deploy;
mod failure;
mod fuzz_regressions;
mod harness;
mod integrity;
mod legacy;
mod models;
mod proxy;
mod redaction;
mod reload;
mod robustness;
mod shapes;
mod validation;
