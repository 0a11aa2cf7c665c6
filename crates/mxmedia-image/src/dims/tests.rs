use super::target_dims;
use crate::Method::{Crop, Scale};

/// Every case of the spec's sizing rules, including extreme aspect ratios and tiny sources.
#[test]
fn table() {
    #[rustfmt::skip]
    let cases = [
        // src            req          method  expected
        ((4000, 3000), (320, 240), Scale, (320, 240)),
        ((4000, 3000), (96, 96),   Scale, (96, 72)),
        ((3000, 4000), (320, 240), Scale, (180, 240)),
        ((1920, 1080), (320, 240), Scale, (320, 180)),
        ((1920, 1080), (800, 600), Scale, (800, 450)),
        ((640, 480),   (640, 480), Scale, (640, 480)),
        // never upscale: a source inside the box keeps its size
        ((64, 64),     (320, 240), Scale, (64, 64)),
        ((200, 100),   (800, 600), Scale, (200, 100)),
        // one side inside the box, the other not
        ((100, 1000),  (320, 240), Scale, (24, 240)),
        ((1000, 100),  (320, 240), Scale, (320, 32)),
        // crop: exact request when the source covers it
        ((4000, 3000), (96, 96),   Crop,  (96, 96)),
        ((4000, 3000), (32, 32),   Crop,  (32, 32)),
        ((1920, 1080), (320, 240), Crop,  (320, 240)),
        ((3000, 4000), (320, 240), Crop,  (320, 240)),
        ((96, 96),     (96, 96),   Crop,  (96, 96)),
        // crop, source smaller than the request: largest rectangle of that aspect inside it
        ((64, 64),     (96, 96),   Crop,  (64, 64)),
        ((64, 64),     (320, 240), Crop,  (64, 48)),
        ((64, 64),     (240, 320), Crop,  (48, 64)),
        ((50, 1000),   (96, 96),   Crop,  (50, 50)),
        ((1000, 50),   (96, 96),   Crop,  (50, 50)),
        ((100, 60),    (320, 240), Crop,  (80, 60)),
        // extreme aspect ratios never give a zero side
        ((10000, 1),   (320, 240), Scale, (320, 1)),
        ((1, 10000),   (320, 240), Scale, (1, 240)),
        ((10000, 1),   (96, 96),   Crop,  (1, 1)),
        ((1, 10000),   (96, 96),   Crop,  (1, 1)),
        ((10000, 1),   (32, 32),   Scale, (32, 1)),
        ((65535, 1),   (1, 1),     Scale, (1, 1)),
        ((1, 1),       (800, 600), Scale, (1, 1)),
        ((1, 1),       (800, 600), Crop,  (1, 1)),
        // zero inputs are treated as 1
        ((0, 0),       (320, 240), Scale, (1, 1)),
        ((640, 480),   (0, 0),     Crop,  (1, 1)),
        ((640, 480),   (0, 240),   Scale, (1, 1)),
    ];
    for (src, req, method, expected) in cases {
        let got = target_dims(src.0, src.1, req.0, req.1, method);
        assert_eq!(got, expected, "src {src:?} req {req:?} {method:?}");
    }
}

/// Over a sweep of sources and requests: never larger than the source, never 0, scale fits inside
/// the box with one side touching it (when the source does not fit), crop is exact when it can be.
#[test]
fn invariants_sweep() {
    let sides = [
        1u32, 2, 3, 7, 31, 32, 33, 96, 100, 239, 240, 241, 320, 479, 1000, 4000, 65535,
    ];
    for &sw in &sides {
        for &sh in &sides {
            for &(rw, rh) in &[
                (32, 32),
                (96, 96),
                (320, 240),
                (640, 480),
                (800, 600),
                (1, 500),
            ] {
                for method in [Scale, Crop] {
                    let (w, h) = target_dims(sw, sh, rw, rh, method);
                    let case = format!("src {sw}x{sh} req {rw}x{rh} {method:?} -> {w}x{h}");
                    assert!(w >= 1 && h >= 1, "{case}");
                    assert!(w <= sw && h <= sh, "never upscale: {case}");
                    match method {
                        Scale if sw <= rw && sh <= rh => assert_eq!((w, h), (sw, sh), "{case}"),
                        Scale => {
                            assert!(w <= rw && h <= rh, "fits the box: {case}");
                            assert!(w == rw || h == rh, "touches the box: {case}");
                        }
                        Crop if sw >= rw && sh >= rh => assert_eq!((w, h), (rw, rh), "{case}"),
                        Crop => {
                            assert!(w == sw || h == sh, "as large as the source allows: {case}");
                            // aspect ratio within rounding of one pixel
                            let err = (f64::from(w) / f64::from(h) - f64::from(rw) / f64::from(rh))
                                .abs()
                                * f64::from(h);
                            assert!(err <= 1.0 || w == 1 || h == 1, "aspect ratio kept: {case}");
                        }
                    }
                }
            }
        }
    }
}
