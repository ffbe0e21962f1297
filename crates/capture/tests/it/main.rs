//! Integration tests of the capture crate.
mod decode;
mod gen;
#[cfg(feature = "live")]
mod live;
mod reader;
