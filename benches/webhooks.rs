//! The pure work of a webhook besides routing: checking its signature and rendering its
//! TwiML. `cargo bench --bench webhooks`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard::domain::{
    signature::{self, Algorithm},
    twiml::{TemplateName, Templates, Values},
};

const TOKEN: &str = "12345678901234567890123456789012";
const URL: &str =
    "https://switchboard.example.com/voice/calls/CA0123456789abcdef0123456789abcdef/attempts/1/action";

/// A dial's action callback as Twilio posts it.
fn params() -> Vec<(String, String)> {
    [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("CallStatus", "in-progress"),
        ("Called", "+18005550100"),
        ("Caller", "+14155550123"),
        ("DialCallDuration", "134"),
        ("DialCallSid", "CAfedcba9876543210fedcba9876543210"),
        ("DialCallStatus", "completed"),
        ("Direction", "inbound"),
        ("From", "+14155550123"),
        ("FromCity", "SAN FRANCISCO"),
        ("FromState", "CA"),
        ("To", "+18005550100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn webhooks(c: &mut Criterion) {
    let params = params();
    for (name, algorithm) in [
        ("HMAC-SHA1", Algorithm::HmacSha1),
        ("HMAC-SHA256", Algorithm::HmacSha256),
    ] {
        let signed = signature::sign(TOKEN, URL, &params, algorithm);
        c.bench_function(&format!("signature: check a 14-parameter webhook, {name}"), |b| {
            b.iter(|| {
                black_box(signature::is_valid(
                    TOKEN,
                    URL,
                    black_box(&params),
                    &signed,
                    algorithm,
                ))
            })
        });
    }
    let templates = Templates::builtin().expect("the built-in templates");
    // A dial's values: with or without recording and a whisper (two more callback URLs).
    let dial = |extras: &'static str| {
        [
            ("action_url", URL),
            ("status_url", URL),
            ("timeout", "30"),
            ("number", "+14155550101"),
            ("send_digits", ""),
            ("caller_id", "+14155550123"),
            ("answer_on_bridge", "true"),
            (
                "record",
                if extras.is_empty() {
                    ""
                } else {
                    "record-from-answer-dual"
                },
            ),
            ("recording_url", extras),
            ("whisper_url", extras),
        ]
    };
    for (name, extras) in [
        ("twiml: render a <Dial> to a number", ""),
        ("twiml: render a recorded, whispered <Dial>", URL),
    ] {
        let values = dial(extras);
        c.bench_function(name, |b| {
            b.iter(|| black_box(templates.render(TemplateName::DialNumber, &Values(&values))))
        });
    }
    c.bench_function("twiml: render the explicit end", |b| {
        b.iter(|| {
            black_box(templates.render(
                TemplateName::End,
                &Values(&[(
                    "message",
                    "We are sorry, nobody is available to take your call right now.",
                )]),
            ))
        })
    });
}

criterion_group!(benches, webhooks);
criterion_main!(benches);
