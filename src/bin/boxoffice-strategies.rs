//! The server with the bench's coupon lock strategies compiled in (the
//! `bench-strategies` feature adds `--coupon-lock-strategy` and
//! `--coupon-sold-out-memory`): the same program as `boxoffice`, built by
//! the bench under its own name so the release binary never has them.
include!("../main.rs");
