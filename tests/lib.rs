//! Test harness for the system tests (filled in below).
