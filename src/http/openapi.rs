//! `GET /openapi.json`: the OpenAPI document of `/api/v1`, open to anyone (it holds no data).

use actix_web::{HttpResponse, web};

const DOCUMENT: &str = include_str!("openapi.json");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(document));
}

async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(DOCUMENT)
}
