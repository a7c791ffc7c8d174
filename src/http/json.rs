//! Reading JSON bodies so that a bad value is answered with the path of the field that holds it.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Parses a body that must be a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::Malformed("the body must be a JSON object".into())),
        Err(e) => Err(ApiError::Malformed(format!("the body is not valid JSON: {e}"))),
    }
}

/// Reads a typed value, naming the offending field (`caps.daily`, `buyers[1].weight`) on error.
pub fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        // serde reports a missing field at its parent's path; name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_owned(),
            (".", None) => "body".to_owned(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (_, None) => path,
        };
        ApiError::invalid(field, message)
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Thing {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u8,
    }

    #[test]
    fn errors_name_the_field_or_the_body() {
        match typed::<Thing>(json!({"name": "x", "inner": {"count": 300}})) {
            Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "inner.count"),
            other => panic!("{other:?}"),
        }
        match typed::<Thing>(json!({"inner": {"count": 3}})) {
            Err(ApiError::Invalid { field, message }) => {
                assert_eq!(field, "name");
                assert!(message.contains("missing field `name`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match typed::<Thing>(json!({"name": "x", "inner": {}})) {
            Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "inner.count"),
            other => panic!("{other:?}"),
        }
        match typed::<Thing>(json!("not an object")) {
            Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "body"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_objects_and_broken_json_are_malformed() {
        assert!(matches!(object(b"[1]"), Err(ApiError::Malformed(_))));
        assert!(matches!(object(b"{\"a\":"), Err(ApiError::Malformed(_))));
        assert!(object(b"  ").unwrap().is_empty());
    }
}
