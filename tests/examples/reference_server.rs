//! The bare reference server for `cargo xtask bench`: the same two user
//! routes and SQL as sluice-server on hyper + sqlx, with none of the
//! sluice layers (no metrics, breaker, request ids, validation beyond
//! parsing). `DATABASE_URL=… reference_server <port> <pool_size> [sluice-pool]`.

#![allow(missing_docs)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sqlx::postgres::PgPoolOptions;

/// `(id, name, email, bio, created_at)`, as sluice-server reads it.
type UserRow = (i64, String, String, String, chrono::DateTime<chrono::Utc>);

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    pool: sqlx::PgPool,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == hyper::Method::GET
        && let Some(id) = path
            .strip_prefix("/users/")
            .and_then(|id| id.parse::<i64>().ok())
    {
        let row: Result<Option<UserRow>, _> = sqlx::query_as(
            "SELECT u.id, u.name, u.email, COALESCE(p.bio, '') AS bio, u.created_at \
             FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE u.id = $1",
        )
        .bind(id)
        .fetch_optional(&pool)
        .await;
        return Ok(match row {
            Ok(Some((id, name, email, bio, created))) => reply(
                StatusCode::OK,
                serde_json::json!({"success": true, "data": {"id": id, "name": name, "email": email, "bio": bio,
                                    "created_at": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}})
                .to_string(),
            ),
            Ok(None) => reply(StatusCode::NOT_FOUND, "{\"success\":false}".into()),
            Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "{\"success\":false}".into()),
        });
    }
    if req.method() == hyper::Method::POST && path == "/users" {
        let Ok(body) = req.into_body().collect().await else {
            return Ok(reply(StatusCode::BAD_REQUEST, "{}".into()));
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
            return Ok(reply(StatusCode::BAD_REQUEST, "{}".into()));
        };
        let (name, email, bio) = (
            value["name"].as_str().unwrap_or("").trim().to_owned(),
            value["email"].as_str().unwrap_or("").to_lowercase(),
            value["bio"].as_str().unwrap_or("").to_owned(),
        );
        let created = async {
            let mut tx = pool.begin().await?;
            let (id,): (i64,) =
                sqlx::query_as("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id")
                    .bind(&name)
                    .bind(&email)
                    .fetch_one(&mut *tx)
                    .await?;
            sqlx::query("INSERT INTO profiles (user_id, bio) VALUES ($1, $2)")
                .bind(id)
                .bind(&bio)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<i64, sqlx::Error>(id)
        }
        .await;
        return Ok(match created {
            Ok(id) => reply(
                StatusCode::CREATED,
                format!("{{\"success\":true,\"user_id\":{id}}}"),
            ),
            Err(_) => reply(StatusCode::CONFLICT, "{\"success\":false}".into()),
        });
    }
    Ok(reply(StatusCode::NOT_FOUND, "{}".into()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let pool_size: u32 = args.next().and_then(|p| p.parse().ok()).unwrap_or(10);
    // `sluice-pool`: the same connection check as sluice-pool (ping only
    // connections idle for 1 s or more); otherwise sqlx's default (ping
    // before every acquire).
    let same_pool_check = args.next().as_deref() == Some("sluice-pool");
    let url = std::env::var("DATABASE_URL")?;
    let mut options = PgPoolOptions::new()
        .max_connections(pool_size)
        .min_connections(1);
    if same_pool_check {
        options = options
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= std::time::Duration::from_secs(1) {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
    }
    let pool = options.connect(&url).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(pool.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
