//! The provider's side of a call: webhook bodies as Twilio sends them, and reading the TwiML
//! Switchboard answers.

use reqwest::StatusCode;

pub const CALLER: &str = "+14155550123";
/// The main campaign's tracking number in the test plans.
pub const MAIN: &str = "+18005550100";

pub fn sid(n: u32) -> String {
    format!("CA{n:032x}")
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

pub fn incoming(sid: &str, from: &str, to: &str) -> String {
    form(&[
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", from),
        ("To", to),
    ])
}

pub fn dial_ended(sid: &str, status: &str, seconds: u32) -> String {
    form(&[
        ("CallSid", sid),
        ("CallStatus", "in-progress"),
        ("DialCallStatus", status),
        ("DialCallDuration", &seconds.to_string()),
        ("From", CALLER),
        ("To", MAIN),
    ])
}

pub fn call_over(sid: &str) -> String {
    form(&[
        ("CallSid", sid),
        ("CallStatus", "completed"),
        ("CallDuration", "130"),
        ("SequenceNumber", "0"),
    ])
}

/// The parent call's status callback, with `status`.
pub fn call_status(sid: &str, status: &str) -> String {
    form(&[("CallSid", sid), ("CallStatus", status)])
}

/// A buyer leg's status callback.
pub fn leg_status(sid: &str, status: &str) -> String {
    form(&[
        ("CallSid", "CA99999999999999999999999999999999"),
        ("ParentCallSid", sid),
        ("CallStatus", status),
    ])
}

/// The number a `<Dial>` dials, and its action URL.
pub async fn dialed(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), StatusCode::OK);
    let twiml = response.text().await.unwrap();
    let number = twiml
        .split("\">")
        .nth(2)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("not a dial: {twiml}"))
        .to_owned();
    let action = twiml
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    (number, action)
}

/// A callback URL's path: what it names, without the trail its query carries.
pub fn path_of(url: &str) -> String {
    url::Url::parse(url).unwrap().path().to_owned()
}

/// The URL of another callback of the same attempt as `url` (`action`, `status`, `recording`…),
/// with the same query.
pub fn sibling(url: &str, callback: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.path_segments_mut().unwrap().pop().push(callback);
    url.into()
}
