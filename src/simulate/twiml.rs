//! TwiML as a provider reads it: checked element by element and attribute by attribute against
//! the names and values Twilio documents for each verb and noun (a real provider refuses or
//! ignores anything else, and the call fails in front of a caller), then read for what the
//! simulated provider does next.
//!
//! The checker knows the verbs Switchboard may answer with (`Say`, `Play`, `Pause`, `Gather`,
//! `Dial` with `Number`/`Sip`/`Client`, `Redirect`, `Hangup`, `Reject`), each attribute's
//! documented values, where each element may appear, and which need text.

use xml::reader::{EventReader, ParserConfig, XmlEvent};

/// Which document is read: a call's own, or one that runs on a buyer's leg when it answers (the
/// `<Number url>` whisper), where `<Dial>` is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    Call,
    Leg,
}

/// One element of a checked document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        (self.attributes.iter())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why an answer is not TwiML a provider could follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TwiML: {0}")]
pub struct Invalid(pub String);

/// What an attribute's value may be.
#[derive(Clone, Copy)]
enum Value {
    /// An absolute `http(s)` URL, or a relative one.
    Url,
    /// `GET` or `POST`.
    Method,
    /// `true` or `false`.
    Bool,
    /// A whole number in a range.
    Int(u32, u32),
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// Some of these words, space-separated.
    Events(&'static [&'static str]),
    /// DTMF: `0-9 A-D * #`, and `w`/`W` for a half-second or one-second wait.
    Digits,
    /// A phone number in E.164 form, or, for a SIP or client leg, a name of letters, digits and
    /// `+ - _ . :` (`client:alice`).
    CallerId,
    /// Any text that is not empty.
    Text,
}

impl Value {
    fn check(self, value: &str) -> Result<(), String> {
        let fine = match self {
            Self::Url => {
                value.starts_with('/')
                    || url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            }
            Self::Method => matches!(value, "GET" | "POST"),
            Self::Bool => matches!(value, "true" | "false"),
            Self::Int(min, max) => value.parse::<u32>().is_ok_and(|n| (min..=max).contains(&n)),
            Self::OneOf(words) => words.contains(&value),
            Self::Events(words) => {
                !value.trim().is_empty() && value.split_whitespace().all(|word| words.contains(&word))
            }
            Self::Digits => {
                !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_digit() || "ABCD*#wW".contains(c))
            }
            Self::CallerId => match value.strip_prefix('+') {
                Some(digits) => {
                    (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
                }
                None => {
                    !value.is_empty()
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"+-_.:".contains(&b))
                }
            },
            Self::Text => !value.trim().is_empty(),
        };
        if fine { Ok(()) } else { Err(self.expected()) }
    }

    fn expected(self) -> String {
        match self {
            Self::Url => "a URL".into(),
            Self::Method => "GET or POST".into(),
            Self::Bool => "true or false".into(),
            Self::Int(min, max) => format!("a whole number from {min} to {max}"),
            Self::OneOf(words) => format!("one of {}", words.join(", ")),
            Self::Events(words) => format!("some of {}, space-separated", words.join(" ")),
            Self::Digits => "digits, A-D, * #, w and W".into(),
            Self::CallerId => "a phone number in E.164 form or a client name".into(),
            Self::Text => "some text".into(),
        }
    }
}

/// What an element may have.
struct Spec {
    attributes: &'static [(&'static str, Value)],
    children: &'static [&'static str],
    /// Whether it must hold text (a number, a URL, words to say), may, or may not.
    text: Body,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Required,
    Optional,
    None,
}

const LEG_EVENTS: &[&str] = &["initiated", "ringing", "answered", "completed"];
const VERBS: &[&str] = &[
    "Say", "Play", "Pause", "Gather", "Dial", "Redirect", "Hangup", "Reject",
];

/// Twilio's documentation of each element, as far as Switchboard uses TwiML.
fn spec(name: &str) -> Option<Spec> {
    use Value::*;
    let leg_callbacks: &'static [(&'static str, Value)] = &[
        ("url", Url),
        ("method", Method),
        ("statusCallback", Url),
        ("statusCallbackEvent", Events(LEG_EVENTS)),
        ("statusCallbackMethod", Method),
    ];
    Some(match name {
        "Response" => Spec {
            attributes: &[],
            children: VERBS,
            text: Body::None,
        },
        "Say" => Spec {
            attributes: &[("voice", Text), ("language", Text), ("loop", Int(0, 1000))],
            children: &[],
            text: Body::Required,
        },
        "Play" => Spec {
            attributes: &[("loop", Int(0, 1000)), ("digits", Digits)],
            children: &[],
            text: Body::Optional,
        },
        "Pause" => Spec {
            attributes: &[("length", Int(1, 600))],
            children: &[],
            text: Body::None,
        },
        "Gather" => Spec {
            attributes: &[
                ("action", Url),
                ("method", Method),
                ("timeout", Int(1, 600)),
                ("numDigits", Int(1, 100)),
                (
                    "finishOnKey",
                    OneOf(&["", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "#", "*"]),
                ),
                ("input", OneOf(&["dtmf", "speech", "dtmf speech", "speech dtmf"])),
                ("actionOnEmptyResult", Bool),
                ("speechTimeout", Text),
                ("language", Text),
                ("hints", Text),
                ("profanityFilter", Bool),
                ("bargeIn", Bool),
            ],
            children: &["Say", "Play", "Pause"],
            text: Body::None,
        },
        "Dial" => Spec {
            attributes: &[
                ("action", Url),
                ("method", Method),
                ("timeout", Int(5, 600)),
                ("timeLimit", Int(1, 14_400)),
                ("callerId", CallerId),
                ("answerOnBridge", Bool),
                (
                    "record",
                    OneOf(&[
                        "do-not-record",
                        "record-from-answer",
                        "record-from-ringing",
                        "record-from-answer-dual",
                        "record-from-ringing-dual",
                        // Legacy spellings Twilio still documents.
                        "true",
                        "false",
                    ]),
                ),
                ("trim", OneOf(&["trim-silence", "do-not-trim"])),
                ("recordingStatusCallback", Url),
                ("recordingStatusCallbackMethod", Method),
                (
                    "recordingStatusCallbackEvent",
                    Events(&["in-progress", "completed", "absent"]),
                ),
                ("recordingTrack", OneOf(&["both", "inbound", "outbound"])),
                ("hangupOnStar", Bool),
                ("ringTone", Text),
                ("sequential", Bool),
            ],
            children: &["Number", "Sip", "Client"],
            text: Body::Optional,
        },
        "Number" => Spec {
            attributes: &[
                ("url", Url),
                ("method", Method),
                ("statusCallback", Url),
                ("statusCallbackEvent", Events(LEG_EVENTS)),
                ("statusCallbackMethod", Method),
                ("sendDigits", Digits),
                ("byoc", Text),
                ("machineDetection", OneOf(&["Enable", "DetectMessageEnd"])),
                ("amdStatusCallback", Url),
                ("amdStatusCallbackMethod", Method),
            ],
            children: &[],
            text: Body::Required,
        },
        "Sip" => Spec {
            attributes: &[
                ("url", Url),
                ("method", Method),
                ("statusCallback", Url),
                ("statusCallbackEvent", Events(LEG_EVENTS)),
                ("statusCallbackMethod", Method),
                ("username", Text),
                ("password", Text),
                ("machineDetection", OneOf(&["Enable", "DetectMessageEnd"])),
                ("amdStatusCallback", Url),
                ("amdStatusCallbackMethod", Method),
            ],
            children: &[],
            text: Body::Required,
        },
        "Client" => Spec {
            attributes: leg_callbacks,
            children: &[],
            text: Body::Required,
        },
        "Redirect" => Spec {
            attributes: &[("method", Method)],
            children: &[],
            text: Body::Required,
        },
        "Hangup" => Spec {
            attributes: &[],
            children: &[],
            text: Body::None,
        },
        "Reject" => Spec {
            attributes: &[("reason", OneOf(&["rejected", "busy"]))],
            children: &[],
            text: Body::None,
        },
        _ => return None,
    })
}

/// Parses and checks a document: its root is `<Response>`, and every element, attribute and
/// value is one the provider documents, where it may appear.
pub fn check(text: &str, document: Document) -> Result<Element, Invalid> {
    let config = ParserConfig::new().trim_whitespace(true).ignore_comments(true);
    let mut open: Vec<Element> = Vec::new();
    let mut root = None;
    for event in EventReader::new_with_config(text.as_bytes(), config) {
        match event.map_err(|e| Invalid(e.to_string()))? {
            XmlEvent::StartElement { name, attributes, .. } => {
                let name = name.local_name;
                match open.last() {
                    None if name != "Response" => {
                        return Err(Invalid(format!("the root is <{name}>, not <Response>")));
                    }
                    None => {}
                    Some(parent) => {
                        let allowed = spec(&parent.name).is_some_and(|s| s.children.contains(&name.as_str()));
                        if !allowed {
                            let known = spec(&name).is_some();
                            return Err(Invalid(if known {
                                format!("<{name}> may not be inside <{}>", parent.name)
                            } else {
                                format!("<{name}> is not a verb this provider knows")
                            }));
                        }
                    }
                }
                if document == Document::Leg && name == "Dial" {
                    return Err(Invalid("a buyer's leg may not <Dial>".into()));
                }
                let spec = spec(&name).ok_or_else(|| Invalid(format!("<{name}> is unknown")))?;
                let attributes: Vec<(String, String)> = (attributes.into_iter())
                    .map(|a| (a.name.local_name, a.value))
                    .collect();
                for (key, value) in &attributes {
                    let (_, kind) = (spec.attributes.iter())
                        .find(|(known, _)| known == key)
                        .ok_or_else(|| Invalid(format!("<{name}> has no attribute `{key}`")))?;
                    kind.check(value).map_err(|expected| {
                        Invalid(format!("<{name} {key}=\"{value}\">: must be {expected}"))
                    })?;
                }
                open.push(Element {
                    name,
                    attributes,
                    text: String::new(),
                    children: Vec::new(),
                });
            }
            XmlEvent::Characters(text) | XmlEvent::CData(text) => {
                let element = open
                    .last_mut()
                    .ok_or_else(|| Invalid("text outside <Response>".into()))?;
                if spec(&element.name).is_some_and(|s| s.text == Body::None) {
                    return Err(Invalid(format!("<{}> takes no text: {text:?}", element.name)));
                }
                element.text.push_str(&text);
            }
            XmlEvent::EndElement { .. } => {
                let element = open.pop().ok_or_else(|| Invalid("an unmatched end tag".into()))?;
                let spec = spec(&element.name).ok_or_else(|| Invalid("unknown element".into()))?;
                if spec.text == Body::Required && element.text.trim().is_empty() {
                    return Err(Invalid(format!("<{}> needs text", element.name)));
                }
                match open.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            _ => {}
        }
    }
    let root = root.ok_or_else(|| Invalid("no <Response>".into()))?;
    // Only as the first verb: the call is refused before it is answered.
    if (root.children.iter().skip(1)).any(|verb| verb.name == "Reject") {
        return Err(Invalid("<Reject> after another verb".into()));
    }
    Ok(root)
}

/// What an answer tells the provider to do with the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ring `number` (a phone number or a SIP URI); then request `action` with the result.
    Dial(Dial),
    /// Request `url` for what to do instead.
    Redirect { url: String },
    /// Hang up (after saying something, or with a busy signal).
    End { said: bool, rejected: bool },
}

/// A `<Dial>` as the provider carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub number: String,
    pub action: String,
    /// Where the buyer leg's progress is reported, if anywhere, and which of its events
    /// (`statusCallbackEvent`: `completed` alone unless it says).
    pub status_callback: Option<String>,
    pub status_events: Vec<String>,
    /// Whether the provider runs answering machine detection on the leg, and where it reports
    /// the verdict.
    pub machine_detection: bool,
    pub amd_callback: Option<String>,
    /// The document the buyer's leg runs when it answers (whisper, press-1), if any.
    pub whisper_url: Option<String>,
    /// How the call is recorded (`record`), and where the recording is reported.
    pub record: Option<String>,
    pub recording_callback: Option<String>,
    pub caller_id: Option<String>,
}

/// Reads an answer's TwiML: the first verb that decides where the call goes (`<Say>` and
/// `<Pause>` before it are only noted).
pub fn read(text: &str) -> Result<Next, Invalid> {
    let root = check(text, Document::Call)?;
    let mut said = false;
    for verb in &root.children {
        match verb.name.as_str() {
            "Say" | "Play" => said = true,
            "Pause" | "Gather" => {}
            "Hangup" => {
                return Ok(Next::End {
                    said,
                    rejected: false,
                });
            }
            "Reject" => return Ok(Next::End { said, rejected: true }),
            "Redirect" => {
                return Ok(Next::Redirect {
                    url: verb.text.trim().to_owned(),
                });
            }
            "Dial" => return dial(verb).map(Next::Dial),
            other => return Err(Invalid(format!("<{other}> is not a verb this provider knows"))),
        }
    }
    // A response that runs out of verbs ends the call.
    Ok(Next::End {
        said,
        rejected: false,
    })
}

fn dial(verb: &Element) -> Result<Dial, Invalid> {
    let owned = |value: Option<&str>| value.map(str::to_owned);
    // Stricter than Twilio here: Switchboard always writes an action, and routes on there.
    let action =
        owned(verb.attribute("action")).ok_or_else(|| Invalid("a <Dial> without an action URL".into()))?;
    // A number may be the `<Dial>`'s own text instead of a noun.
    let (number, noun) = match verb.children.first() {
        Some(noun) => (noun.text.trim().to_owned(), Some(noun)),
        None => (verb.text.trim().to_owned(), None),
    };
    if number.is_empty() {
        return Err(Invalid("a <Dial> with nothing to dial".into()));
    }
    if verb.children.len() > 1 {
        return Err(Invalid("a <Dial> to several buyers at once".into()));
    }
    let record = owned(verb.attribute("record")).filter(|r| !matches!(r.as_str(), "do-not-record" | "false"));
    let recording_callback = owned(verb.attribute("recordingStatusCallback"));
    if recording_callback.is_some() && record.is_none() {
        return Err(Invalid(
            "a recordingStatusCallback for a <Dial> that records nothing".into(),
        ));
    }
    Ok(Dial {
        number,
        action,
        status_callback: owned(noun.and_then(|n| n.attribute("statusCallback"))),
        status_events: (noun.and_then(|n| n.attribute("statusCallbackEvent")))
            .unwrap_or("completed")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        machine_detection: noun.and_then(|n| n.attribute("machineDetection")).is_some(),
        amd_callback: owned(noun.and_then(|n| n.attribute("amdStatusCallback"))),
        whisper_url: owned(noun.and_then(|n| n.attribute("url"))),
        record,
        recording_callback,
        caller_id: owned(verb.attribute("callerId")),
    })
}

/// What a buyer's leg does with the document its `<Number url>` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whisper {
    /// Plays the prompt, then requests `action` with the key pressed (`Digits`), or none.
    Gather { action: String, said: bool },
    /// Plays it (if anything), then the caller is put through.
    Bridge { said: bool },
    /// The buyer's leg is hung up: the caller is not put through.
    Hangup,
}

/// Reads a document for a buyer's leg (a whisper, a press-1 prompt, or its answer).
pub fn read_whisper(text: &str) -> Result<Whisper, Invalid> {
    let root = check(text, Document::Leg)?;
    let mut said = false;
    for verb in &root.children {
        match verb.name.as_str() {
            "Say" | "Play" => said = true,
            "Pause" => {}
            "Gather" => {
                let action = (verb.attribute("action"))
                    .ok_or_else(|| Invalid("a <Gather> without an action URL".into()))?;
                return Ok(Whisper::Gather {
                    action: action.to_owned(),
                    said: said || !verb.children.is_empty(),
                });
            }
            "Hangup" | "Reject" => return Ok(Whisper::Hangup),
            other => return Err(Invalid(format!("<{other}> on a buyer's leg"))),
        }
    }
    Ok(Whisper::Bridge { said })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::twiml::{TemplateName, Templates, Values};

    #[test]
    fn reads_what_the_built_in_templates_render() {
        let templates = Templates::builtin().unwrap();
        let dial = templates.render(
            TemplateName::DialNumber,
            &Values(&[
                (
                    "action_url",
                    "https://sb.example/voice/calls/CA1/attempts/1/action",
                ),
                (
                    "status_url",
                    "https://sb.example/voice/calls/CA1/attempts/1/status",
                ),
                ("timeout", "30"),
                ("number", "+14155550101"),
                ("send_digits", ""),
                ("caller_id", "+14155550123"),
                ("answer_on_bridge", "true"),
                ("record", "record-from-answer-dual"),
                (
                    "recording_url",
                    "https://sb.example/voice/calls/CA1/attempts/1/recording",
                ),
                (
                    "whisper_url",
                    "https://sb.example/voice/calls/CA1/attempts/1/whisper",
                ),
            ]),
        );
        assert_eq!(
            read(&dial),
            Ok(Next::Dial(Dial {
                number: "+14155550101".into(),
                action: "https://sb.example/voice/calls/CA1/attempts/1/action".into(),
                status_callback: Some("https://sb.example/voice/calls/CA1/attempts/1/status".into()),
                status_events: vec!["answered".into(), "completed".into()],
                machine_detection: false,
                amd_callback: None,
                whisper_url: Some("https://sb.example/voice/calls/CA1/attempts/1/whisper".into()),
                record: Some("record-from-answer-dual".into()),
                recording_callback: Some("https://sb.example/voice/calls/CA1/attempts/1/recording".into()),
                caller_id: Some("+14155550123".into()),
            }))
        );
        let redirect = templates.render(
            TemplateName::Redirect,
            &Values(&[("redirect_url", "https://sb.example/voice/calls/CA1/redirect/x")]),
        );
        assert_eq!(
            read(&redirect),
            Ok(Next::Redirect {
                url: "https://sb.example/voice/calls/CA1/redirect/x".into()
            })
        );
        let end = templates.render(TemplateName::End, &Values(&[("message", "Sorry.")]));
        assert_eq!(
            read(&end),
            Ok(Next::End {
                said: true,
                rejected: false
            })
        );
        for rejected in [TemplateName::UnknownNumber, TemplateName::Blocked] {
            let twiml = templates.render(rejected, &Values(&[]));
            assert_eq!(
                read(&twiml),
                Ok(Next::End {
                    said: false,
                    rejected: true
                })
            );
        }
    }

    #[test]
    fn reads_what_a_buyers_leg_is_told() {
        let templates = Templates::builtin().unwrap();
        let screen = templates.render(
            TemplateName::Screen,
            &Values(&[
                ("screen_url", "https://sb.example/s"),
                ("message", "Call from Auto."),
            ]),
        );
        assert_eq!(
            read_whisper(&screen),
            Ok(Whisper::Gather {
                action: "https://sb.example/s".into(),
                said: true
            })
        );
        let whisper = templates.render(
            TemplateName::Whisper,
            &Values(&[("audio_url", "https://cdn.example/w.mp3")]),
        );
        assert_eq!(read_whisper(&whisper), Ok(Whisper::Bridge { said: true }));
        let connect = templates.render(TemplateName::Connect, &Values(&[]));
        assert_eq!(read_whisper(&connect), Ok(Whisper::Bridge { said: false }));
        let hangup = templates.render(TemplateName::Hangup, &Values(&[]));
        assert_eq!(read_whisper(&hangup), Ok(Whisper::Hangup));
        assert!(read_whisper(r#"<Response><Dial action="/a">+14155550101</Dial></Response>"#).is_err());
    }

    #[test]
    fn refuses_what_a_provider_could_not_follow() {
        assert!(
            matches!(read(r#"<Response><Dial action="/a">+14155550101</Dial></Response>"#), Ok(Next::Dial(d)) if d.number == "+14155550101"),
            "a bare number, and no declaration, are TwiML too"
        );
        for bad in [
            "",
            "<?xml version=\"1.0\"?><Html/>",
            "<?xml version=\"1.0\"?><Response><Say>Hi</Say><Reject/></Response>",
            "<?xml version=\"1.0\"?><Response><Dial action=\"/a\"></Dial></Response>",
            "<?xml version=\"1.0\"?><Response><Redirect/></Response>",
            "<?xml version=\"1.0\"?><Response><Dance/></Response>",
            "<?xml version=\"1.0\"?><Response><Say>unclosed</Response>",
            "<?xml version=\"1.0\"?><Response><Say></Say></Response>",
            "<?xml version=\"1.0\"?><Response><Hangup>now</Hangup></Response>",
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_attribute_and_value_must_be_documented() {
        let dial = |attributes: &str| {
            read(&format!(
                r#"<Response><Dial action="https://sb.example/a" {attributes}><Number>+14155550101</Number></Dial></Response>"#
            ))
        };
        for good in [
            r#"answerOnBridge="true""#,
            r#"answerOnBridge="false" callerId="+14155550123""#,
            r#"record="record-from-ringing-dual" recordingStatusCallback="https://sb.example/r""#,
            r#"recordingStatusCallbackEvent="in-progress completed" record="record-from-answer""#,
            r#"timeout="600" method="GET""#,
            r#"record="true" callerId="client:alice""#,
        ] {
            assert!(dial(good).is_ok(), "{good}: {:?}", dial(good));
        }
        for (bad, complaint) in [
            (r#"answerOnBridge="yes""#, "true or false"),
            (r#"answer_on_bridge="true""#, "no attribute `answer_on_bridge`"),
            (r#"callerid="+14155550123""#, "no attribute `callerid`"),
            (r#"callerId="anonymous caller""#, "E.164"),
            (r#"record="always""#, "one of"),
            (
                r#"record="record-from-answer-dual" recordingStatusCallbackEvent="done""#,
                "some of",
            ),
            (r#"timeout="4""#, "from 5 to 600"),
            (r#"method="PUT""#, "GET or POST"),
            (
                r#"recordingStatusCallback="https://sb.example/r""#,
                "records nothing",
            ),
        ] {
            let err = dial(bad).unwrap_err().to_string();
            assert!(err.contains(complaint), "{bad}: {err}");
        }
        let sip_digits =
            r#"<Response><Dial action="/a"><Sip sendDigits="1">sip:a@b.example</Sip></Dial></Response>"#;
        assert!(
            read(sip_digits)
                .unwrap_err()
                .to_string()
                .contains("no attribute `sendDigits`")
        );
        let events = r#"<Response><Dial action="/a"><Number statusCallbackEvent="initiated ringing answer">+14155550101</Number></Dial></Response>"#;
        assert!(read(events).is_err());
        let gather = r#"<Response><Gather numDigits="0" action="/g"><Say>Hi</Say></Gather></Response>"#;
        assert!(read_whisper(gather).is_err());
    }
}
