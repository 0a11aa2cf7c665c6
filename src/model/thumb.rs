//! `ThumbSpec`: one thumbnail of a piece of media, as a client asks for it, as it is rendered
//! and stored, and as it is asked of a remote server.

use mxmedia_image::Method;

/// A requested or configured thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbSpec {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    pub animated: bool,
}
