//! TwiML as a provider reads it: what the simulated provider does next with a call.

use xml::reader::{EventReader, ParserConfig, XmlEvent};

/// What an answer tells the provider to do with the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ring `number` (a phone number or a SIP URI); then request `action` with the result.
    Dial {
        number: String,
        action: String,
        /// Where the buyer leg's progress is reported, if anywhere.
        status_callback: Option<String>,
    },
    /// Request `url` for what to do instead.
    Redirect { url: String },
    /// Hang up (after saying something, or with a busy signal).
    End { said: bool, rejected: bool },
}

/// Why an answer is not TwiML a provider could follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TwiML: {0}")]
pub struct Invalid(pub String);

/// Reads an answer's TwiML: the first verb that decides where the call goes (`<Say>` and
/// `<Pause>` before it are only noted).
pub fn read(text: &str) -> Result<Next, Invalid> {
    let invalid = |message: &str| Invalid(message.to_owned());
    let config = ParserConfig::new().trim_whitespace(true).ignore_comments(true);
    let mut verbs: Vec<Verb> = Vec::new();
    let mut depth = 0;
    let mut root_seen = false;
    for event in EventReader::new_with_config(text.as_bytes(), config) {
        match event.map_err(|e| Invalid(e.to_string()))? {
            XmlEvent::StartElement { name, attributes, .. } => {
                depth += 1;
                let attribute = |key: &str| {
                    (attributes.iter())
                        .find(|a| a.name.local_name == key)
                        .map(|a| a.value.clone())
                };
                match (depth, name.local_name.as_str()) {
                    (1, "Response") => root_seen = true,
                    (1, other) => return Err(Invalid(format!("the root is <{other}>, not <Response>"))),
                    (2, verb) => verbs.push(Verb {
                        name: verb.to_owned(),
                        action: attribute("action"),
                        text: String::new(),
                        noun: None,
                    }),
                    (3, "Number" | "Sip" | "Client") => {
                        let verb = verbs.last_mut().ok_or_else(|| invalid("a noun outside a verb"))?;
                        verb.noun = Some(Noun {
                            status_callback: attribute("statusCallback"),
                            text: String::new(),
                        });
                    }
                    (_, other) => return Err(Invalid(format!("unexpected <{other}>"))),
                }
            }
            XmlEvent::Characters(text) | XmlEvent::CData(text) => match (depth, verbs.last_mut()) {
                (2, Some(verb)) => verb.text.push_str(&text),
                (3, Some(Verb { noun: Some(noun), .. })) => noun.text.push_str(&text),
                _ => return Err(Invalid(format!("text outside a verb: {text:?}"))),
            },
            XmlEvent::EndElement { .. } => depth -= 1,
            _ => {}
        }
    }
    if !root_seen {
        return Err(invalid("no <Response>"));
    }
    let mut said = false;
    for (position, verb) in verbs.into_iter().enumerate() {
        match verb.name.as_str() {
            "Say" | "Play" => said = true,
            "Pause" => {}
            "Hangup" => {
                return Ok(Next::End {
                    said,
                    rejected: false,
                });
            }
            // Only as the first verb: the call is refused before it is answered.
            "Reject" if position == 0 => return Ok(Next::End { said, rejected: true }),
            "Reject" => return Err(invalid("<Reject> after another verb")),
            "Redirect" => {
                let url = verb.text.trim();
                if url.is_empty() {
                    return Err(invalid("a <Redirect> without a URL"));
                }
                return Ok(Next::Redirect { url: url.to_owned() });
            }
            "Dial" => {
                let action = verb
                    .action
                    .ok_or_else(|| invalid("a <Dial> without an action URL"))?;
                // A number may be the `<Dial>`'s own text instead of a noun.
                let (number, status_callback) = match verb.noun {
                    Some(noun) => (noun.text.trim().to_owned(), noun.status_callback),
                    None => (verb.text.trim().to_owned(), None),
                };
                if number.is_empty() {
                    return Err(invalid("a <Dial> with nothing to dial"));
                }
                return Ok(Next::Dial {
                    number,
                    action,
                    status_callback,
                });
            }
            other => return Err(Invalid(format!("<{other}> is not a verb this provider knows"))),
        }
    }
    // A response that runs out of verbs ends the call.
    Ok(Next::End {
        said,
        rejected: false,
    })
}

struct Verb {
    name: String,
    action: Option<String>,
    text: String,
    noun: Option<Noun>,
}

struct Noun {
    status_callback: Option<String>,
    text: String,
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
            ]),
        );
        assert_eq!(
            read(&dial),
            Ok(Next::Dial {
                number: "+14155550101".into(),
                action: "https://sb.example/voice/calls/CA1/attempts/1/action".into(),
                status_callback: Some("https://sb.example/voice/calls/CA1/attempts/1/status".into()),
            })
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
    }

    #[test]
    fn refuses_what_a_provider_could_not_follow() {
        assert_eq!(
            read(r#"<Response><Dial action="/a">+14155550101</Dial></Response>"#),
            Ok(Next::Dial {
                number: "+14155550101".into(),
                action: "/a".into(),
                status_callback: None
            }),
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
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
    }
}
