//! A provider's form parameters: what a webhook sent, in the order sent.

use std::sync::Arc;

/// A webhook's parameters, shared (a call's timeline keeps them) rather than copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormParams(Arc<[(String, String)]>);

impl FormParams {
    /// The first value of `name`, if it was sent (a repeated name is read as its first value,
    /// as the provider signs and documents them).
    pub fn get(&self, name: &str) -> Option<&str> {
        (self.0.iter())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// `name`'s value, empty if it was not sent.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, String)> {
        self.0.iter()
    }
}

impl From<Vec<(String, String)>> for FormParams {
    fn from(params: Vec<(String, String)>) -> Self {
        Self(params.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_its_first_value_and_a_missing_one_reads_empty() {
        let params = FormParams::from(vec![
            ("From".to_owned(), "+14155550123".to_owned()),
            ("Digits".to_owned(), "1".to_owned()),
            ("Digits".to_owned(), "2".to_owned()),
        ]);
        assert_eq!(params.get("From"), Some("+14155550123"));
        assert_eq!(params.get("Digits"), Some("1"));
        assert_eq!(params.get("To"), None);
        assert_eq!(params.text("To"), "");
        assert_eq!(params.iter().count(), 3);
    }
}
