//! mxmedia's image engine: probe a source, and render a thumbnail of it.
//!
//! Pure and synchronous: bytes in, bytes out, no I/O, no threads, no global state. The thumbnailer
//! runs it on its own thread pool. The entry points are deliberately non-generic (`&[u8]` in,
//! `Vec<u8>` out), so the `image` and `fast_image_resize` generics are instantiated in this crate,
//! which the workspace compiles optimised even in dev builds (CRATES.md §3.7).
//!
//! Order of work in [`thumbnail`]: sniff the format from magic bytes, read the header, check the
//! declared size and cost (frames, JPEG scans, chunks) against [`Limits`], and only then decode —
//! JPEG at a reduced IDCT scale when the target is small — resize, orient and encode.

mod animated;
mod color;
mod decode;
mod dims;
mod encode;
mod error;
mod gif_scan;
mod header;
mod jpeg;
mod jpeg_scan;
mod limits;
mod png_scan;
mod resize;
mod sniff;
mod webp_scan;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use dims::target_dims;
pub use error::Error;
pub use limits::Limits;

use resize::Plan;

/// How a thumbnail is fitted to the requested size (the `method` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Crop around the centre to the requested aspect ratio, then resize.
    Crop,
    /// Resize to fit inside the requested box, keeping the aspect ratio.
    Scale,
}

impl Method {
    /// The name the spec gives the method (`crop`, `scale`), as in the `method` query
    /// parameter of [thumbnail requests](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// A method name that is neither `crop` nor `scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMethod;

impl std::fmt::Display for UnknownMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("method must be crop or scale")
    }
}

impl std::error::Error for UnknownMethod {}

impl std::str::FromStr for Method {
    type Err = UnknownMethod;

    /// The spec's names only, case-sensitive, as in the query parameter.
    fn from_str(s: &str) -> Result<Self, UnknownMethod> {
        [Self::Crop, Self::Scale]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or(UnknownMethod)
    }
}

/// A source format, as detected from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    WebP,
}

impl Format {
    /// The media type of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::WebP => "image/webp",
        }
    }
}

/// What a source's header says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    /// Size as displayed, i.e. after the EXIF orientation is applied.
    pub width: u32,
    pub height: u32,
    /// More than one frame (GIF, WebP or APNG).
    pub animated: bool,
}

impl Probe {
    /// Whether the source is no larger than `req_w`×`req_h` on both sides. The spec then asks the
    /// server to serve the original instead of a thumbnail.
    pub fn fits_within(&self, req_w: u32, req_h: u32) -> bool {
        self.width <= req_w && self.height <= req_h
    }
}

/// A rendered thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    /// `image/jpeg`, `image/png` or (animated) `image/gif`.
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    pub animated: bool,
}

/// The format `src` starts like (its magic bytes; 12 are enough), or `None` when it is none of
/// ours. What a file is called or declared as is never trusted.
pub fn sniff(src: &[u8]) -> Option<Format> {
    sniff::format(src)
}

/// Reads the header of `src`: format, displayed size, animation. Never allocates a pixel buffer.
///
/// Errors: [`Error::Unsupported`] when the bytes are none of our formats, [`Error::Corrupt`] when
/// the header cannot be read.
pub fn probe(src: &[u8]) -> Result<Probe, Error> {
    guard(|| header::read(src).map(|h| h.probe()))
}

/// Renders a `req_w`×`req_h` thumbnail of `src` (see [`target_dims`] for the size rules; nothing is
/// ever upscaled). With `animated` and an animated source the result is an animated GIF; otherwise
/// it is a JPEG, or a PNG when the result has transparent pixels.
///
/// The declared size, frame count and cost are checked against `limits` before decoding, so
/// decompression bombs and decoder-pinning files fail fast with [`Error::TooLarge`],
/// [`Error::TooManyFrames`] or [`Error::TooCostly`], on every decoding path. With a time budget
/// in `limits`, [`Error::TimedOut`] once it is spent (checked between steps and frames).
pub fn thumbnail(
    src: &[u8],
    req_w: u32,
    req_h: u32,
    method: Method,
    animated: bool,
    limits: &Limits,
) -> Result<Thumbnail, Error> {
    guard(|| {
        let deadline = limits.deadline();
        let header = header::read(src)?;
        limits.check_frame(header.frame_pixels)?;
        limits.check_cost(&header)?;
        let plan = Plan::new(&header, req_w, req_h, method);
        if animated && header.animated() {
            limits.check_animation(header.frames, header.frame_pixels)?;
            if let Some(thumb) = animated::render(src, &header, &plan, limits, &deadline)? {
                deadline.check()?;
                return Ok(thumb);
            }
        }
        let (image, icc) = decode::first_frame(src, &header, &plan, limits)?;
        deadline.check()?;
        let mut image = resize::apply(&mut fast_image_resize::Resizer::new(), image, &plan)?;
        if let Some(icc) = icc {
            color::to_srgb(&mut image, &icc);
        }
        let thumb = encode::still(image)?;
        // A result past the budget is dropped too: the caller has been told it failed.
        deadline.check()?;
        Ok(thumb)
    })
}

/// Runs every reader of an image's structure on `src`, unguarded, for the fuzz target in
/// `fuzz/`: a panic there must surface as a crash, not be turned into [`Error::Corrupt`].
#[doc(hidden)]
pub fn fuzz_header(src: &[u8]) {
    let _ = sniff::format(src);
    let _ = jpeg_scan::scan(src);
    let _ = png_scan::scan(src);
    let _ = gif_scan::scan(src);
    let _ = webp_scan::scan(src);
    if let Ok(header) = header::read(src) {
        let limits = Limits::default();
        let _ = limits.check_frame(header.frame_pixels);
        let _ = limits.check_cost(&header);
        let _ = limits.check_animation(header.frames, header.frame_pixels);
        let probe = header.probe();
        let _ = Plan::new(&header, 96, 96, Method::Crop).output();
        let _ = probe.fits_within(96, 96);
    }
}

/// Runs `f`, turning a panic inside a decoder into [`Error::Corrupt`]: the decoders are fuzzed, but
/// a hostile upload must never take down the thumbnailer's worker thread.
fn guard<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::Corrupt("decoder panicked".into())))
}
