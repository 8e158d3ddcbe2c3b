//! Request guards: plain functions of (policy, request facts) that allow or refuse.
//! No I/O, no clock: each is testable with a `#[test]`.

pub mod access;
pub mod canon;
pub mod client;
pub mod limits;
pub mod shed;
pub mod validate;
