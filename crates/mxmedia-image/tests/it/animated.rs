//! Animated sources: frames in and out, delays, limits, and the still first frame.

use std::io::Cursor;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, Rgba, RgbaImage};
use mxmedia_image::{Error, Limits, Method, probe, thumbnail};

use crate::common::{decode, decode_gif};

const ANIM_GIF: &[u8] = include_bytes!("../fixtures/anim_64x64_8f.gif");
const ANIM_WEBP: &[u8] = include_bytes!("../fixtures/anim_64x64_8f.webp");

/// A GIF of `frames` frames of `w`×`h`, each a different flat colour, `delay_ms` apart.
fn make_gif(w: u32, h: u32, frames: u32, delay_ms: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, 30);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for i in 0..frames {
            let shade = u8::try_from(i * 40 % 256).unwrap();
            let buffer = RgbaImage::from_pixel(w, h, Rgba([shade, 255 - shade, 128, 255]));
            let delay = Delay::from_numer_denom_ms(delay_ms, 1);
            encoder
                .encode_frame(Frame::from_parts(buffer, 0, 0, delay))
                .unwrap();
        }
    }
    out
}

/// The 8-frame fixture gives 8 frames when animated (100 ms each), and one still frame otherwise.
#[test]
fn gif_fixture_in_and_out() {
    let limits = Limits::default();
    let t = thumbnail(ANIM_GIF, 32, 32, Method::Crop, true, &limits).unwrap();
    assert!(t.animated);
    assert_eq!((t.width, t.height), (32, 32));
    let frames = decode_gif(&t);
    assert_eq!(frames.len(), 8);
    assert!(frames.iter().all(|(_, delay)| *delay == 100));
    // larger than the source: frames kept at 64x64
    let t = thumbnail(ANIM_GIF, 320, 240, Method::Scale, true, &limits).unwrap();
    assert_eq!((t.width, t.height, decode_gif(&t).len()), (64, 64, 8));

    let still = thumbnail(ANIM_GIF, 32, 32, Method::Crop, false, &limits).unwrap();
    assert!(!still.animated);
    assert_ne!(still.content_type, "image/gif");
    assert_eq!((still.width, still.height), (32, 32));
    decode(&still);
}

/// An animated WebP becomes an animated GIF with the same frames.
#[test]
fn webp_animation_to_gif() {
    let t = thumbnail(ANIM_WEBP, 48, 48, Method::Scale, true, &Limits::default()).unwrap();
    assert!(t.animated);
    assert_eq!((t.width, t.height), (48, 48));
    let frames = decode_gif(&t);
    assert_eq!(frames.len(), 8);
    assert!(frames.iter().all(|(_, delay)| *delay == 100));
    let still = thumbnail(ANIM_WEBP, 48, 48, Method::Scale, false, &Limits::default()).unwrap();
    assert!(!still.animated);
    decode(&still);
}

/// A larger animation is really downscaled, every frame keeps its colour and its delay.
#[test]
fn downscales_every_frame() {
    let src = make_gif(400, 300, 5, 70);
    let t = thumbnail(&src, 100, 100, Method::Scale, true, &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (100, 75));
    let frames = decode_gif(&t);
    assert_eq!(frames.len(), 5);
    for (i, (frame, delay)) in frames.iter().enumerate() {
        assert_eq!(*delay, 70);
        let shade = u8::try_from(i * 40 % 256).unwrap();
        let px = frame.get_pixel(50, 37).0;
        assert!(
            px[0].abs_diff(shade) < 16 && px[1].abs_diff(255 - shade) < 16,
            "frame {i}: {px:?}"
        );
    }
    let crop = thumbnail(&src, 50, 50, Method::Crop, true, &Limits::default()).unwrap();
    assert_eq!(
        (crop.width, crop.height, decode_gif(&crop).len()),
        (50, 50, 5)
    );
}

/// Too many frames, or too many pixels over all frames, is refused when animating, and fine when
/// only the first frame is wanted.
#[test]
fn animation_limits() {
    let many = make_gif(4, 4, 501, 10);
    assert!(probe(&many).unwrap().animated);
    let err = thumbnail(&many, 4, 4, Method::Scale, true, &Limits::default());
    assert!(
        matches!(err, Err(Error::TooManyFrames { frames: 501 })),
        "{err:?}"
    );
    assert!(thumbnail(&many, 4, 4, Method::Scale, false, &Limits::default()).is_ok());
    let roomy = Limits {
        max_frames: 600,
        ..Limits::default()
    };
    assert_eq!(
        decode_gif(&thumbnail(&many, 4, 4, Method::Scale, true, &roomy).unwrap()).len(),
        501
    );

    let src = make_gif(64, 64, 10, 50);
    let tight = Limits {
        max_total_animated_pixels: 40_000,
        ..Limits::default()
    };
    let err = thumbnail(&src, 32, 32, Method::Scale, true, &tight);
    assert!(
        matches!(err, Err(Error::TooLarge { pixels: 40_960 })),
        "{err:?}"
    );
    assert!(thumbnail(&src, 32, 32, Method::Scale, false, &tight).is_ok());
}

/// An APNG is probed as animated and rendered as an animated GIF.
#[test]
fn apng_animation() {
    let mut src = Vec::new();
    {
        let mut encoder = png::Encoder::new(Cursor::new(&mut src), 40, 20);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_animated(3, 0).unwrap();
        encoder.set_frame_delay(1, 5).unwrap(); // 200 ms
        let mut writer = encoder.write_header().unwrap();
        for i in 0..3u8 {
            writer
                .write_image_data(&[i * 100, 50, 200, 255].repeat(40 * 20))
                .unwrap();
        }
        writer.finish().unwrap();
    }
    let p = probe(&src).unwrap();
    assert!(p.animated);
    assert_eq!((p.width, p.height), (40, 20));
    let t = thumbnail(&src, 20, 20, Method::Scale, true, &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (20, 10));
    let frames = decode_gif(&t);
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|(_, delay)| *delay == 200));
}
