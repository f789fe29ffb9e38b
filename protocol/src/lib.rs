//! jitc-protocol: the messages `jitc` and `jitc-agentd` exchange, the frame codec that
//! carries them, and [`SecretBytes`], the only type secret values travel in.
//!
//! Wire format: a 4-byte big-endian length, then that many bytes of a postcard-encoded
//! [`Request`] or [`Response`]. Frames are capped at [`MAX_FRAME_LEN`]; the cap is
//! checked from the prefix before anything is allocated. postcard rather than bincode:
//! bincode's development ended and its newest release is a `compile_error!`; postcard is
//! serde-based, maintained, and documents a stable wire format.
#![forbid(unsafe_code)]

#[cfg(test)]
mod arbitrary;
pub mod audit_files;
mod code;
pub mod display;
pub mod encodings;
mod frame;
pub mod kinds;
mod message;
pub mod names;
pub mod paths;
mod secret;

pub use code::ErrorCode;
pub use frame::{
    FRAME_PREFIX_LEN, FrameBuf, FrameError, MAX_FRAME_LEN, decode, encode_frame, frame_len,
    read_frame, write_frame,
};
pub use message::*;
pub use secret::SecretBytes;

/// Bumped whenever any message changes shape. Never derived from the crate version:
/// two builds with the same version but different messages must not talk.
pub const PROTOCOL_VERSION: u32 = 7;
