//! Bearer tokens on every route: [`authorize`] checks the `Authorization` header against the
//! token store ([`crate::auth`]) and the caller's role against the route's.

use actix_web::HttpRequest;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::{Principal, Role};

/// Checks the bearer token and that its role is at least `min`.
pub fn authorize(req: &HttpRequest, state: &AppState, min: Role) -> Result<Principal, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::NoToken)?;
    let token = header.strip_prefix("Bearer ").ok_or(ApiError::NoToken)?.trim();
    let who = state.tokens.verify(token).ok_or(ApiError::BadToken)?;
    if who.role < min {
        return Err(ApiError::Forbidden(min));
    }
    Ok(who)
}
