//! `GET /openapi.json`: the OpenAPI document of `/api/v1`, open to anyone (it holds no data).

use actix_web::{HttpResponse, http::Method};

use super::ApiRoute;

const DOCUMENT: &str = include_str!("openapi.json");

pub fn routes() -> [ApiRoute; 1] {
    [ApiRoute::new(Method::GET, "/openapi.json", |r| r.to(document))]
}

async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(DOCUMENT)
}
