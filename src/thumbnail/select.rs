//! Which thumbnail answers a request: the original when it is already small enough, else the
//! smallest configured size that is at least as large as asked, so no client can make the
//! server render arbitrary sizes (unless the admin allows dynamic sizes).

use mxmedia_image::{Method, Probe};

use crate::{config::ThumbnailConfig, model::thumb::ThumbSpec};

#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    Original,
    Render(ThumbSpec),
}

pub fn choose(probe: &Probe, req: ThumbSpec, config: &ThumbnailConfig) -> Choice {
    // An animated source may only be sent as is when animation was asked for.
    let original_ok = !probe.animated || (req.animated && config.animated);
    if original_ok && probe.fits_within(req.width, req.height) {
        return Choice::Original;
    }
    let animated = req.animated && config.animated && probe.animated;
    let best = config
        .sizes
        .iter()
        .filter(|s| s.method == req.method && s.width >= req.width && s.height >= req.height)
        .min_by_key(|s| u64::from(s.width) * u64::from(s.height));
    if let Some(size) = best {
        return Choice::Render(ThumbSpec {
            width: size.width,
            height: size.height,
            method: size.method,
            animated,
        });
    }
    if config.dynamic {
        return Choice::Render(ThumbSpec { animated, ..req });
    }
    // Larger than every configured size: the original is at least as large as asked.
    if original_ok {
        return Choice::Original;
    }
    // An animated source asked for still and large: its first frame at full size, one variant.
    Choice::Render(ThumbSpec {
        width: probe.width,
        height: probe.height,
        method: Method::Scale,
        animated: false,
    })
}

/// The size to ask a remote server for: the smallest configured size of the method at least
/// as large as asked, else the largest configured one, so clients cannot make us fetch and
/// keep arbitrarily many sizes; the request itself with dynamic sizes or none configured.
pub fn snap(req: ThumbSpec, config: &ThumbnailConfig) -> ThumbSpec {
    let animated = req.animated && config.animated;
    let same_method = || config.sizes.iter().filter(|s| s.method == req.method);
    let fitting = same_method()
        .filter(|s| s.width >= req.width && s.height >= req.height)
        .min_by_key(|s| u64::from(s.width) * u64::from(s.height));
    let size = match fitting {
        Some(size) => size,
        None if config.dynamic => return ThumbSpec { animated, ..req },
        None => match same_method().max_by_key(|s| u64::from(s.width) * u64::from(s.height)) {
            Some(size) => size,
            None => return ThumbSpec { animated, ..req },
        },
    };
    ThumbSpec {
        width: size.width,
        height: size.height,
        method: req.method,
        animated,
    }
}

#[cfg(test)]
mod tests {
    use mxmedia_image::{Format, Method, Probe};

    use super::{Choice, choose, snap};
    use crate::{config::Config, model::thumb::ThumbSpec};

    fn probe(width: u32, height: u32, animated: bool) -> Probe {
        Probe {
            format: Format::Png,
            width,
            height,
            animated,
        }
    }

    fn req(width: u32, height: u32, method: Method) -> ThumbSpec {
        ThumbSpec {
            width,
            height,
            method,
            animated: false,
        }
    }

    #[test]
    fn picks_smallest_configured_size_not_smaller_than_asked() {
        let config = Config::default().thumbnails;
        let p = probe(4000, 3000, false);
        assert_eq!(
            choose(&p, req(100, 100, Method::Scale), &config),
            Choice::Render(req(320, 240, Method::Scale))
        );
        assert_eq!(
            choose(&p, req(50, 50, Method::Crop), &config),
            Choice::Render(req(96, 96, Method::Crop))
        );
        assert_eq!(
            choose(&p, req(32, 32, Method::Crop), &config),
            Choice::Render(req(32, 32, Method::Crop))
        );
        assert_eq!(
            choose(&p, req(700, 500, Method::Scale), &config),
            Choice::Render(req(800, 600, Method::Scale))
        );
    }

    #[test]
    fn small_or_oversized_requests_get_the_original() {
        let config = Config::default().thumbnails;
        assert_eq!(
            choose(&probe(64, 64, false), req(96, 96, Method::Crop), &config),
            Choice::Original
        );
        assert_eq!(
            choose(
                &probe(4000, 3000, false),
                req(2000, 2000, Method::Scale),
                &config
            ),
            Choice::Original
        );
    }

    #[test]
    fn animated_sources_stay_still_unless_asked() {
        let config = Config::default().thumbnails;
        let small_gif = probe(64, 64, true);
        assert_eq!(
            choose(&small_gif, req(96, 96, Method::Crop), &config),
            Choice::Render(req(96, 96, Method::Crop)),
            "still first frame, never the animated original"
        );
        let animated = ThumbSpec {
            animated: true,
            ..req(96, 96, Method::Crop)
        };
        assert_eq!(choose(&small_gif, animated, &config), Choice::Original);
        let big_gif = probe(1000, 1000, true);
        assert_eq!(
            choose(&big_gif, animated, &config),
            Choice::Render(animated)
        );
    }

    #[test]
    fn dynamic_sizes_only_when_allowed() {
        let mut config = Config::default().thumbnails;
        let p = probe(4000, 3000, false);
        assert_eq!(
            choose(&p, req(1000, 1000, Method::Crop), &config),
            Choice::Original
        );
        config.dynamic = true;
        assert_eq!(
            choose(&p, req(1000, 1000, Method::Crop), &config),
            Choice::Render(req(1000, 1000, Method::Crop))
        );
    }

    /// Remote thumbnails are asked for at configured sizes only, so clients cannot make us
    /// fetch and keep arbitrarily many variants.
    #[test]
    fn remote_requests_snap_to_configured_sizes() {
        let mut config = Config::default().thumbnails;
        let snapped = |r: ThumbSpec, c: &crate::config::ThumbnailConfig| {
            let s = snap(r, c);
            (s.width, s.height, s.method)
        };
        assert_eq!(
            snapped(req(50, 50, Method::Crop), &config),
            (96, 96, Method::Crop)
        );
        assert_eq!(
            snapped(req(300, 200, Method::Scale), &config),
            (320, 240, Method::Scale)
        );
        // Larger than all: the largest of the method.
        assert_eq!(
            snapped(req(2000, 2000, Method::Scale), &config),
            (800, 600, Method::Scale)
        );
        config.dynamic = true;
        assert_eq!(
            snapped(req(2000, 2000, Method::Scale), &config),
            (2000, 2000, Method::Scale)
        );
    }
}
