//! Benchmarks live in `benches/host.rs`; figures and how to reproduce them
//! in `README.md` beside this crate.
