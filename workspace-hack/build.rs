//! Empty: `[build-dependencies]` needs a build script to count.
fn main() {}
