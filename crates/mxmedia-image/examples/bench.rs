//! Timing of `thumbnail` on a 12 Mpx JPEG photo and a full-HD RGBA PNG (release build):
//!
//! `CARGO_TARGET_DIR=/work/target-image cargo run -j 1 --release -p mxmedia-image --example bench`
//!
//! Prints the median wall time of 10 runs per case, and the mean CPU time of the process per run
//! (which includes the IDCT worker threads `jpeg-decoder` starts, and is less distorted than wall
//! time when the machine is shared). Not a test: timings depend on the machine and its load.

#![allow(
    clippy::indexing_slicing,
    clippy::as_conversions,
    reason = "a measuring tool on generated sizes, not product code"
)]

use std::error::Error;
use std::io::Cursor;
use std::time::{Duration, Instant};

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use mxmedia_image::{Limits, Method, thumbnail};

const RUNS: usize = 10;

fn main() -> Result<(), Box<dyn Error>> {
    let mut jpeg = Vec::new();
    photo(4000, 3000).write_with_encoder(JpegEncoder::new_with_quality(&mut jpeg, 90))?;
    let mut png = Cursor::new(Vec::new());
    DynamicImage::ImageRgba8(translucent(1920, 1080)).write_to(&mut png, ImageFormat::Png)?;
    let png = png.into_inner();
    println!(
        "sources: 4000x3000 JPEG q90 {} KiB, 1920x1080 RGBA PNG {} KiB",
        jpeg.len() / 1024,
        png.len() / 1024
    );

    for (name, src) in [("4000x3000 JPEG", &jpeg), ("1920x1080 PNG ", &png)] {
        for (w, h, method) in [(320, 240, Method::Scale), (96, 96, Method::Crop)] {
            let mut times = Vec::with_capacity(RUNS);
            let mut last = None;
            let cpu_before = cpu_ms();
            for _ in 0..RUNS {
                let start = Instant::now();
                last = Some(thumbnail(src, w, h, method, false, &Limits::default())?);
                times.push(start.elapsed());
            }
            let cpu = cpu_ms()
                .zip(cpu_before)
                .map(|(after, before)| (after - before) / RUNS as f64);
            times.sort();
            let median = times.get(RUNS / 2).copied().unwrap_or(Duration::ZERO);
            let out = last.ok_or("no run")?;
            println!(
                "{name} -> {w}x{h} {method:?}: median {:.1} ms (min {:.1}, max {:.1}), CPU {} -> {}x{} {} {} B",
                ms(median),
                ms(times.first().copied().unwrap_or_default()),
                ms(times.last().copied().unwrap_or_default()),
                cpu.map_or("n/a".to_string(), |c| format!("{c:.1} ms")),
                out.width,
                out.height,
                out.content_type,
                out.bytes.len(),
            );
        }
    }
    Ok(())
}

/// CPU time (user + system) of this process so far, all threads, from /proc (Linux only).
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1000.0 / CLOCK_TICKS_PER_SEC)
}

/// USER_HZ, 100 on every mainstream Linux configuration.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Photo-like pixels: smooth gradients plus low-amplitude noise (a flat gradient would compress
/// and decode unrealistically fast).
fn photo(width: u32, height: u32) -> RgbImage {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let noise = (seed % 24) as i64 - 12;
        let ch = |v: u32| (i64::from(v) + noise).clamp(0, 255) as u8;
        Rgb([
            ch(x * 255 / width),
            ch(y * 255 / height),
            ch((x + y) * 127 / (width + height) + 64),
        ])
    })
}

/// The photo with an alpha ramp, so the thumbnail really needs PNG.
fn translucent(width: u32, height: u32) -> RgbaImage {
    let rgb = photo(width, height);
    RgbaImage::from_fn(width, height, |x, y| {
        let Rgb([r, g, b]) = *rgb.get_pixel(x, y);
        Rgba([r, g, b, (64 + y * 191 / height) as u8])
    })
}
