//! Typed success envelopes: every success body carries `"success": true`.

use serde::Serialize;

/// `{"success": true, "data": …}`.
#[derive(Debug, Serialize)]
pub(crate) struct Data<T> {
    success: bool,
    data: T,
}

impl<T> Data<T> {
    /// Wraps `data`.
    pub(crate) fn new(data: T) -> Self {
        Self {
            success: true,
            data,
        }
    }
}

/// `{"success": true, "user_id": 7}`: the answer to `POST /users`.
#[derive(Debug, Serialize)]
pub(crate) struct Created {
    success: bool,
    user_id: i64,
}

impl Created {
    /// The new user's id.
    pub(crate) fn new(user_id: i64) -> Self {
        Self {
            success: true,
            user_id,
        }
    }
}

/// `/healthz` and `/readyz`: `{"status": "…"}`, and what is failing.
#[derive(Debug, Serialize)]
pub(crate) struct Probe {
    pub(crate) status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) failing: Vec<String>,
}
