//! Pure sizing: from a source size and a thumbnail request to the output size.
//!
//! No pixels here, only arithmetic, so the spec's rules (never upscale, crop gives the requested aspect
//! ratio, scale fits inside the box, never a zero-sized side) are checked by a table of cases.

use crate::Method;

#[cfg(test)]
mod tests;

/// The size of the thumbnail for a `src_w`×`src_h` source (as displayed) and a `req_w`×`req_h`
/// request, never larger than the source on either side and never 0 on either side.
///
/// - `Scale` fits the source inside the box, keeping its aspect ratio: one side equals the box, the
///   other is at most the box. A source that already fits is returned at its own size (the caller
///   should serve the original then, see [`crate::Probe::fits_within`]).
/// - `Crop` returns exactly `req_w`×`req_h` when the source covers it. Otherwise it returns the
///   largest size with the requested aspect ratio that fits inside the source (rounded to whole
///   pixels), so nothing is upscaled.
///
/// Zero inputs are treated as 1: the HTTP layer rejects them, and a total function is safer here.
pub fn target_dims(src_w: u32, src_h: u32, req_w: u32, req_h: u32, method: Method) -> (u32, u32) {
    let (sw, sh) = (u64::from(src_w.max(1)), u64::from(src_h.max(1)));
    let (rw, rh) = (u64::from(req_w.max(1)), u64::from(req_h.max(1)));
    // Which side binds: the source is relatively wider than the box when sw/rw >= sh/rh.
    let source_wider = sw * rh >= sh * rw;
    let (w, h) = match method {
        Method::Scale if sw <= rw && sh <= rh => (sw, sh),
        Method::Scale if source_wider => (rw, div_round(sh * rw, sw)),
        Method::Scale => (div_round(sw * rh, sh), rh),
        Method::Crop if sw >= rw && sh >= rh => (rw, rh),
        // The largest rw:rh rectangle inside the source is as tall as the source when the source is
        // wider than that aspect ratio, and as wide as it otherwise.
        Method::Crop if source_wider => (div_round(sh * rw, rh), sh),
        Method::Crop => (sw, div_round(sw * rh, rw)),
    };
    (clamp_side(w, sw), clamp_side(h, sh))
}

/// `a / b` rounded to nearest; `b` is never 0 here.
fn div_round(a: u64, b: u64) -> u64 {
    (a + b / 2) / b
}

/// Keeps a computed side within `1..=source side`. The source side fits in u32, so the result does.
fn clamp_side(side: u64, source: u64) -> u32 {
    u32::try_from(side.clamp(1, source)).unwrap_or(u32::MAX)
}
