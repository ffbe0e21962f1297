//! Integration tests of the capture crate.
mod gen;
mod reader;
mod decode;
