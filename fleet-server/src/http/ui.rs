//! The web view's files, built into the binary: `GET /` (the page, [`index`]) and
//! `GET /ui/{file}` (plain JavaScript and CSS, no build step; uPlot under `/ui/vendor/`).
//!
//! The page's own files are sent with `no-cache` (a new server version shows at once, a
//! revalidation costs one round trip); the vendored files with a day of caching.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::error::ApiError;

/// What the page may load and connect to: only this server (no CDN, no inline script).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                       img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// (path under /ui/, content type, bytes, cache-control)
const ASSETS: &[(&str, &str, &[u8], &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
        "no-cache",
    ),
    (
        "notify.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/notify.js"),
        "no-cache",
    ),
    (
        "inside.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/inside.js"),
        "no-cache",
    ),
    (
        "theme.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/theme.js"),
        "no-cache",
    ),
    (
        "alerts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/alerts.js"),
        "no-cache",
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/views.js"),
        "no-cache",
    ),
    (
        "columns.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/columns.js"),
        "no-cache",
    ),
    (
        "estate.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/estate.js"),
        "no-cache",
    ),
    (
        "rollouts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/rollouts.js"),
        "no-cache",
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
        "no-cache",
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/vendor/uPlot.iife.min.js"),
        "public, max-age=86400",
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/vendor/uPlot.min.css"),
        "public, max-age=86400",
    ),
    (
        "vendor/uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../ui/vendor/uPlot.LICENSE"),
        "public, max-age=86400",
    ),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui/{file:.*}", web::get().to(asset));
}

/// `GET /`: the page.
pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(include_str!("../../ui/index.html"))
}

async fn asset(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (_, ctype, body, cache) = ASSETS
        .iter()
        .find(|(p, ..)| *p == file.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no file {}", req.path())))?;
    Ok(HttpResponse::Ok()
        .content_type(*ctype)
        .insert_header((header::CACHE_CONTROL, *cache))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(*body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        let page = include_str!("../../ui/index.html");
        for (path, ..) in ASSETS.iter().filter(|(p, ..)| !p.ends_with("LICENSE")) {
            assert!(
                page.contains(&format!("/ui/{path}")),
                "{path} is not used by index.html"
            );
        }
        assert!(
            !page.contains("<script>"),
            "no inline script (CSP script-src 'self')"
        );
        assert!(!page.contains("http://") && !page.contains("https://"), "no CDN");
    }
}
