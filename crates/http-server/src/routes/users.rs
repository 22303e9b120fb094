//! `GET /users/{user_id}` and `POST /users`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use sluice_db::{DbError, params};

use crate::envelope::{Created, Data, data_text};
use crate::error::{AppError, ErrorCode, FieldError};
use crate::extract::{self, Param};
use crate::state::AppState;

/// `(id, name, email, bio, created_at)`: a tuple decodes without a derive.
type UserRow = (i64, String, String, String, DateTime<Utc>);

/// A user as the API shows it (and as the cache stores it).
#[derive(Debug, Clone, Serialize, PartialEq)]
struct User {
    id: i64,
    name: String,
    email: String,
    bio: String,
    created_at: String,
}

/// The check of a cached user before its text is answered with as it is
/// stored: every field of a [`User`], of its type, and no other (a field
/// the API does not show makes it a miss). The strings borrow from the
/// text unless they hold escapes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "decoded only to check the cached text")]
struct CachedUser<'a> {
    id: i64,
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    email: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    bio: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    created_at: std::borrow::Cow<'a, str>,
}

fn is_cached_user(text: &[u8]) -> bool {
    serde_json::from_slice::<CachedUser<'_>>(text).is_ok()
}

impl From<UserRow> for User {
    fn from((id, name, email, bio, created_at): UserRow) -> Self {
        Self {
            id,
            name,
            email,
            bio,
            created_at: created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }
}

/// A positive integer that fits in i64, else 422.
fn user_id(raw: &str) -> Result<i64, AppError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(AppError::invalid(vec![FieldError::new(
            "user_id",
            "must be a positive integer",
        )])),
    }
}

fn cache_key(id: i64) -> String {
    format!("user:{id}")
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Param(raw): Param,
) -> Result<Response, AppError> {
    let id = user_id(&raw)?;
    let inner = &state.inner;
    if let Some(cache) = &inner.cache
        && let Ok(Some(text)) = cache.get_text_checked(&cache_key(id), is_cached_user).await
    {
        return Ok(data_text(text));
    }
    // Lag is fine here: a replica that lacks the row (a user created a
    // moment ago) hands the read to the primary.
    let row: Option<UserRow> = inner
        .db
        .query_optional_lagging(
            "SELECT u.id, u.name, u.email, COALESCE(p.bio, '') AS bio, u.created_at \
             FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE u.id = $1",
            params![id],
        )
        .await?;
    let user = User::from(row.ok_or_else(|| AppError::not_found(format!("user {id} not found")))?);
    if let Some(cache) = &inner.cache {
        // The answer does not wait for the cache write (a hung cache would
        // cost its timeout a second time), and a cache failure never fails
        // the request. Users are never updated, so a late write is not stale.
        let (cache, user, ttl) = (cache.clone(), user.clone(), inner.config.user_cache_ttl);
        tokio::spawn(async move {
            if let Err(e) = cache.set(&cache_key(id), &user, ttl).await {
                tracing::debug!(error = %e, "user cache write failed");
            }
        });
    }
    Ok(Json(Data::new(user)).into_response())
}

/// The validated fields of a new user.
#[derive(Debug)]
struct NewUser {
    name: String,
    email: String,
    bio: String,
}

fn validate(body: &serde_json::Value) -> Result<NewUser, AppError> {
    let object = body
        .as_object()
        .ok_or_else(|| AppError::bad_request("the body must be a JSON object"))?;
    let mut errors = Vec::new();
    let text = |field: &str, errors: &mut Vec<FieldError>| match object.get(field) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
    };
    let name = text("name", &mut errors).map(|n| n.trim().to_owned());
    match &name {
        Some(n) if n.contains('\0') => errors.push(FieldError::new(
            "name",
            "must not contain the NUL character (U+0000)",
        )),
        Some(n) if (1..=200).contains(&n.chars().count()) => {}
        Some(_) => errors.push(FieldError::new(
            "name",
            "must be 1 to 200 characters after trimming",
        )),
        None if !errors.iter().any(|e| e.field == "name") => {
            errors.push(FieldError::new("name", "is required"))
        }
        None => {}
    }
    let email = text("email", &mut errors).map(|e| e.trim().to_lowercase());
    match &email {
        Some(e)
            if e.len() <= 254 && email_address::EmailAddress::is_valid(e) && e.contains('.') => {}
        Some(_) => errors.push(FieldError::new(
            "email",
            "must be a valid email address of at most 254 characters",
        )),
        None if !errors.iter().any(|e| e.field == "email") => {
            errors.push(FieldError::new("email", "is required"))
        }
        None => {}
    }
    let bio = text("bio", &mut errors).unwrap_or_default();
    if bio.chars().count() > 10_000 {
        errors.push(FieldError::new("bio", "must be at most 10000 characters"));
    } else if bio.contains('\0') {
        // PostgreSQL's text cannot hold it; refused on every backend alike.
        errors.push(FieldError::new(
            "bio",
            "must not contain the NUL character (U+0000)",
        ));
    }
    match (name, email) {
        (Some(name), Some(email)) if errors.is_empty() => Ok(NewUser { name, email, bio }),
        _ => Err(AppError::invalid(errors)),
    }
}

/// One statement on PostgreSQL: the user and its profile are inserted by
/// the same `INSERT`, which is atomic by itself, so the pair is written in
/// one round trip instead of four (`BEGIN`, two inserts, `COMMIT`).
const INSERT_USER_AND_PROFILE: &str = "WITH new_user AS (\
     INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id) \
     INSERT INTO profiles (user_id, bio) SELECT id, $3 FROM new_user RETURNING user_id";

/// Writes a user and its profile, both or neither; the new user's id.
/// PostgreSQL takes them in one statement
/// ([`INSERT_USER_AND_PROFILE`]); SQLite, whose `WITH` cannot hold an
/// `INSERT`, in a transaction.
async fn insert_user(state: &AppState, user: NewUser) -> sluice_db::Result<i64> {
    let db = &state.inner.db;
    let NewUser { name, email, bio } = user;
    if db.kind() == sluice_pool::Kind::Postgres {
        let (id,): (i64,) = db
            .query_one(INSERT_USER_AND_PROFILE, params![name, email, bio])
            .await?;
        return Ok(id);
    }
    db.transaction(move |tx| {
        let (name, email, bio) = (name.clone(), email.clone(), bio.clone());
        Box::pin(async move {
            let (id,): (i64,) = tx
                .query_one(
                    "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id",
                    params![name, email],
                )
                .await?;
            tx.execute(
                "INSERT INTO profiles (user_id, bio) VALUES ($1, $2)",
                params![id, bio],
            )
            .await?;
            Ok(id)
        })
    })
    .await
}

pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let user = validate(&extract::json(&headers, body)?)?;
    let created = insert_user(&state, user).await;
    let id = match created {
        Ok(id) => id,
        Err(DbError::Conflict { .. }) => {
            return Err(AppError::new(
                ErrorCode::Conflict,
                "a user with this email already exists",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let mut response = (StatusCode::CREATED, Json(Created::new(id))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/users/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_positive_i64() {
        assert_eq!(user_id("7").unwrap(), 7);
        for bad in ["0", "-1", "abc", "9223372036854775808", "1.5", ""] {
            assert_eq!(
                user_id(bad).unwrap_err().status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_names_every_bad_field() {
        let ok = validate(
            &serde_json::json!({"name": "  Ada ", "email": "Ada@Example.com", "extra": 1}),
        )
        .unwrap();
        assert_eq!(
            (ok.name.as_str(), ok.email.as_str(), ok.bio.as_str()),
            ("Ada", "ada@example.com", "")
        );
        let err =
            validate(&serde_json::json!({"name": " ", "email": "nope", "bio": 5})).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            validate(&serde_json::json!([1])).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert!(
            validate(&serde_json::json!({"name": "a".repeat(201), "email": "a@b.co"})).is_err()
        );
        // NUL, which PostgreSQL's text cannot hold, is a field error on
        // every backend, not the database's.
        for body in [
            serde_json::json!({"name": "a\u{0}b", "email": "a@b.co"}),
            serde_json::json!({"name": "ab", "email": "a@b.co", "bio": "x\u{0}"}),
            serde_json::json!({"name": "ab", "email": "a\u{0}@b.co"}),
        ] {
            let err = validate(&body).unwrap_err();
            assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        }
        assert!(
            validate(
                &serde_json::json!({"name": "a", "email": format!("{}@b.co", "a".repeat(250))})
            )
            .is_err()
        );
    }

    #[test]
    fn a_cached_user_is_exactly_a_user() {
        let user = User {
            id: 7,
            name: "Ada \"the first\" Lovelace\n".into(),
            email: "ada@example.com".into(),
            bio: "é, 数学".into(),
            created_at: "2026-12-03T10:00:00Z".into(),
        };
        let text = serde_json::to_vec(&user).unwrap();
        assert!(is_cached_user(&text), "{}", String::from_utf8_lossy(&text));
        let mut value = serde_json::to_value(&user).unwrap();
        value["admin"] = true.into();
        assert!(!is_cached_user(&serde_json::to_vec(&value).unwrap()));
        let mut value = serde_json::to_value(&user).unwrap();
        value.as_object_mut().unwrap().remove("bio");
        assert!(!is_cached_user(&serde_json::to_vec(&value).unwrap()));
        let mut value = serde_json::to_value(&user).unwrap();
        value["id"] = "7".into();
        assert!(!is_cached_user(&serde_json::to_vec(&value).unwrap()));
        assert!(!is_cached_user(b"\"not a user\""));
        assert!(!is_cached_user(b"{\"id\":7"));
    }
}
