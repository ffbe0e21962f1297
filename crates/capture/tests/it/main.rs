//! Integration tests of the capture crate.
mod decode;
mod gen;
mod live;
mod reader;
