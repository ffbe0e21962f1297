//! Fixed-memory traffic estimators for NetSpectra. Pure computation: no I/O,
//! no threads, no locks; every structure is owned by one engine worker and
//! is deterministic for a given seed (seeded XXH3 + SplitMix64).
//!
//! # The three sketches
//!
//! * [`CountMin`] — classic Count-Min (optionally conservative update) with
//!   a top-k candidate set. *Use for* per-key packet/byte volumes with a
//!   provable one-sided error (`true ≤ est ≤ true + ε·N` w.p. ≥ 1 − e^−d) and
//!   a heavy-hitter list. Mergeable across workers ([`CountMin::merge`]).
//! * [`HeavyBucket`] — Go2NetSpectra's "CountMin", really a majority-vote
//!   bucket array recording one key per bucket, for packets and bytes
//!   separately. *Use for* compatibility with the reference's heavy-hitter
//!   output; reported values are lower bounds. Not mergeable.
//! * [`SuperSpread`] — super-spreader detection (Wang et al., PVLDB 2024):
//!   estimates the number of **distinct** elements per key (e.g. distinct
//!   destinations per source). *Use for* scans / fan-out detection.
//!   Not mergeable: route each key to one worker.
//!
//! Callers hash each key once ([`hash::hash_bytes`]) and pass the 64-bit
//! hash to every sketch; rows are derived with [`hash::mix`].
//!
//! # Example
//!
//! ```
//! use netspectra_sketch::{hash, CountMin, CountMinParams, SuperSpread, SuperSpreadParams};
//!
//! let mut cm = CountMin::<u32>::new(CountMinParams { width: 1024, ..Default::default() });
//! let mut ss = SuperSpread::<u32>::new(SuperSpreadParams { width: 1024, ..Default::default() });
//! for pkt in 0..1000u32 {
//!     let src = pkt % 3; // flow key
//!     let dst = pkt; // element
//!     let h = hash::hash_bytes(&src.to_le_bytes(), 42);
//!     cm.insert(src, h, 1);
//!     ss.insert(src, h, hash::hash_bytes(&dst.to_le_bytes(), 43));
//! }
//! let h0 = hash::hash_bytes(&0u32.to_le_bytes(), 42);
//! assert!(cm.estimate(h0) >= 334);
//! assert_eq!(cm.top()[0].1, 334);
//! let spread = ss.query(0, h0);
//! assert!(spread > 250 && spread < 420, "{spread}");
//! ```

pub mod countmin;
pub mod hash;
pub mod heavy;
pub mod memory;
pub mod prefetch;
pub mod rng;
pub mod superspread;
mod topk;

pub use countmin::{CountMin, CountMinParams};
pub use heavy::{HeavyBucket, HeavyBucketParams, HeavyList};
pub use superspread::{SuperSpread, SuperSpreadParams};
