//! Integration tests of the alerter (added below).
