//! jitc-protocol: the messages `jitc` and `jitc-agentd` exchange, the frame codec that
//! carries them, and [`SecretBytes`], the only type secret values travel in.
//!
//! Wire format: a 4-byte big-endian length, then that many bytes of a postcard-encoded
//! [`Request`] or [`Response`]. Frames are capped at [`MAX_FRAME_LEN`]; the cap is
//! checked from the prefix before anything is allocated. postcard rather than bincode:
//! bincode's development ended and its newest release is a `compile_error!`; postcard is
//! serde-based, maintained, and documents a stable wire format.
//!
//! Beside the wire format, this crate holds the rest of the contract the two binaries
//! must keep identically — one definition, so they cannot drift apart:
//! - [`paths`]: where the socket is (both must find the same one);
//! - [`encodings`]: the forms of a value the client masks in output and the agent keeps
//!   off command lines and out of records (a form one side misses is a leak);
//! - [`display`]: how a requester's strings are shown to a person (the approver's
//!   prompt and the listings must read alike);
//! - [`names`]: what a secret name and a reference may be;
//! - [`kinds`] and [`audit_files`]: the audit log's record kinds and file layout, which
//!   the agent writes and `jitc audit` reads.
//!
//! Nothing here does I/O beyond the frame codec, reading the environment, and asking
//! which log files exist.
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
    FRAME_PREFIX_LEN, FrameBuf, FrameError, MAX_FRAME_LEN, borrow_secrets_page, decode,
    encode_frame, encode_secret_info, frame_len, read_frame, secrets_page_frame, write_frame,
};
pub use message::*;
pub use secret::SecretBytes;

/// Bumped whenever any message changes shape. Never derived from the crate version:
/// two builds with the same version but different messages must not talk.
pub const PROTOCOL_VERSION: u32 = 11;
