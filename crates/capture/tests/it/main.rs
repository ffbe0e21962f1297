//! Integration tests of the capture crate.
