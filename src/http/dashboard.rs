//! `/dashboard`: the supervisors' and partners' live page, served from the binary (no front-end
//! build), and `/dashboard.js`, its script.
//!
//! The script is a file of its own so that the page's Content-Security-Policy can refuse every
//! inline script: text from the API that ever ended up parsed as markup could not run.

use actix_web::{HttpResponse, http::header};

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");

/// Scripts only from this server, styles only the page's own, nothing fetched from elsewhere,
/// never framed (clickjacking), forms never submitted anywhere, no `<base>` games.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'unsafe-inline'; \
     frame-ancestors 'none'; form-action 'none'; base-uri 'none'; object-src 'none'";

pub async fn page() -> HttpResponse {
    with_page_headers(HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", POLICY))
        .insert_header(("X-Frame-Options", "DENY"))
        .body(PAGE)
}

pub async fn script() -> HttpResponse {
    with_page_headers(HttpResponse::Ok())
        .content_type("text/javascript; charset=utf-8")
        .body(SCRIPT)
}

/// What the page and its script share: never sniffed as another type, never a referrer (the
/// page's URL may carry a partner's link), never cached by a shared cache.
fn with_page_headers(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    response
}
