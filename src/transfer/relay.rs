//! `relay(src, dst, transform, opts)`: the one entry point every caller (the `copy` command,
//! `migrate`, the daemon's copy jobs) goes through.
//!
//! Guarantees callers can rely on: whatever the transform, the destination is proven
//! byte-identical to what the transform must produce (a plain copy: the source; an unpack:
//! the archive's member, with the archive proven against the source), resumes from the same
//! state directory, and fails with one [`TransferError`]. A new transform (a disk format
//! conversion) is a new [`Transform`] variant here, not a new entry point.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::convert::{Conversion, ConvertSummary};
use super::format::{DiskFormat, InputFormat};
use super::unpack::{copy_convert, copy_unpack, UnpackSummary, UnpackTarget};
use super::{engine, CopyOptions, CopySummary, Location, Progress, TransferError};

/// What happens to the bytes between the source and the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// The destination gets the source's bytes.
    #[default]
    None,
    /// The source is a gzip'd tar of one disk image; the destination gets the image.
    Unpack,
    /// The source is a RAW disk (with `unpack`: a gzip'd tar of one); the destination gets it
    /// in `format` (see `transfer::convert`).
    Convert {
        format: DiskFormat,
        unpack: bool,
        #[serde(default)]
        input: InputFormat,
    },
}

/// Where the result goes: a fixed location, or one named once the transform knows the name
/// (an unpack names it after the archive's member; a plain copy after the source).
pub type Target = UnpackTarget;

/// What a finished relay did. Serialises as the summary of its kind (the JSON of `copy --json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Relayed {
    Copied(CopySummary),
    Unpacked(UnpackSummary),
    Converted(ConvertSummary),
}

impl Relayed {
    /// The destination's figures, whatever the transform.
    pub fn summary(&self) -> &CopySummary {
        match self {
            Self::Copied(s) => s,
            Self::Unpacked(u) => &u.copy,
            Self::Converted(c) => &c.copy,
        }
    }
}

/// Relays `src` to `dst` through `transform` (see the module docs).
pub async fn relay(
    src: Location,
    dst: Target,
    transform: Transform,
    opts: CopyOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<Relayed, TransferError> {
    match transform {
        Transform::None => {
            let dst = match dst {
                UnpackTarget::Fixed(l) => l,
                UnpackTarget::Named(name) => {
                    let base = src.key.rsplit('/').next().unwrap_or_default();
                    name(base).map_err(TransferError::Plan)?
                }
            };
            engine::copy(src, dst, opts, progress, cancel)
                .await
                .map(Relayed::Copied)
        }
        Transform::Unpack => copy_unpack(src, dst, opts, progress, cancel)
            .await
            .map(Relayed::Unpacked),
        Transform::Convert {
            format,
            unpack,
            input,
        } if format != DiskFormat::Raw || (!unpack && input != InputFormat::Raw) => {
            let conv = Conversion {
                format,
                archive: unpack,
                input,
            };
            copy_convert(src, dst, conv, opts, progress, cancel).await
        }
        Transform::Convert { unpack, .. } => {
            // RAW to RAW: nothing to convert.
            let plain = if unpack {
                Transform::Unpack
            } else {
                Transform::None
            };
            Box::pin(relay(src, dst, plain, opts, progress, cancel)).await
        }
    }
}
