//! Kiosk's distribution: OCI references and registries, OpenPGP trust, the pin/blob
//! cache and publishing.
//!
//! Invariant: knows nothing of the database, HTTP serving or the sandbox. A
//! `VerifiedArtifact` exists only as the result of verification.

pub mod artifact;
pub mod icon;
pub mod publish;
pub mod registry;
pub mod trust;
