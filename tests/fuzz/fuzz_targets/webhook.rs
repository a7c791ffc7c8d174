//! Any bytes a provider (or anyone) may POST as a webhook body: reading them never panics, and
//! whatever text they carry, put into any TwiML template, renders a well-formed document.
//!
//! The first byte chooses the body's type (odd: JSON, even: a form); the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::{
    domain::{
        call::{CallSid, Caller, DialStatus, Trail},
        phone::E164,
        rtb::caller_number,
        signature::{self, Algorithm},
        twiml::{TemplateName, Templates, Values},
    },
    http::voice::body_params,
};

const URL: &str = "https://calls.example.com/voice/incoming";

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    let content_type = if kind % 2 == 1 {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    let Ok(params) = body_params(Some(content_type), body) else {
        return;
    };
    let templates = Templates::builtin().expect("the built-in templates are valid");
    for (_, value) in &params {
        let _ = CallSid::parse(value);
        let _ = Caller::from_provider(value);
        let _ = DialStatus::parse(value);
        // A callback URL's query (the trail) is whatever the request says.
        let _ = Trail::from_query(value);
        let _ = E164::from_provider(value);
        let _ = caller_number(value);
        for name in TemplateName::ALL {
            let slots = [
                "action_url",
                "status_url",
                "timeout",
                "number",
                "send_digits",
                "sip_uri",
                "redirect_url",
                "message",
                "caller_id",
                "answer_on_bridge",
                "record",
                "recording_url",
                "whisper_url",
                "audio_url",
                "screen_url",
            ]
            .map(|slot| (slot, value.as_str()));
            let document = templates.render(name, &Values(&slots));
            assert_well_formed(&document);
        }
    }
    // Signing what was read and checking it agree, whatever the parameters.
    let signed = signature::sign("auth-token", URL, &params, Algorithm::HmacSha1);
    assert!(signature::is_valid(
        "auth-token",
        URL,
        &params,
        &signed,
        Algorithm::HmacSha1
    ));
    let _ = signature::body_matches(&String::from_utf8_lossy(body), body);
});

fn assert_well_formed(document: &str) {
    for event in xml::EventReader::new(document.as_bytes()) {
        if let Err(error) = event {
            panic!("rendered TwiML is not well-formed ({error}): {document:?}");
        }
    }
}
