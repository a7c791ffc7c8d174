//! TwiML from templates: parsed once at start-up, named placeholders substituted, every value
//! escaped by the XML writer, so nothing a caller or an operator enters can inject markup.
//!
//! A template is a TwiML document whose attribute values and text may hold `{placeholders}`
//! (`{{` and `}}` for literal braces). Each template knows which placeholders it may use and which
//! it must; an attribute, or an element, that is a lone placeholder with nothing to fill it is
//! left out.

use std::fmt;

use xml::{
    EmitterConfig, ParserConfig,
    common::{Position, TextPosition, XmlVersion},
    reader::{EventReader, XmlEvent as In},
    writer::XmlEvent as Out,
};

/// Every template Switchboard renders, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateName {
    DialNumber,
    DialSip,
    Redirect,
    End,
    UnknownNumber,
    Hangup,
    Whisper,
    Screen,
    Connect,
    Blocked,
}

impl TemplateName {
    pub const ALL: [Self; 10] = [
        Self::DialNumber,
        Self::DialSip,
        Self::Redirect,
        Self::End,
        Self::UnknownNumber,
        Self::Hangup,
        Self::Whisper,
        Self::Screen,
        Self::Connect,
        Self::Blocked,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Self::DialNumber => "dial_number.xml",
            Self::DialSip => "dial_sip.xml",
            Self::Redirect => "redirect.xml",
            Self::End => "end.xml",
            Self::UnknownNumber => "unknown_number.xml",
            Self::Hangup => "hangup.xml",
            Self::Whisper => "whisper.xml",
            Self::Screen => "screen.xml",
            Self::Connect => "connect.xml",
            Self::Blocked => "blocked.xml",
        }
    }

    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.file_name() == name)
    }

    /// The template built into the binary.
    pub fn builtin(self) -> &'static str {
        match self {
            Self::DialNumber => include_str!("../../twiml_templates/dial_number.xml"),
            Self::DialSip => include_str!("../../twiml_templates/dial_sip.xml"),
            Self::Redirect => include_str!("../../twiml_templates/redirect.xml"),
            Self::End => include_str!("../../twiml_templates/end.xml"),
            Self::UnknownNumber => include_str!("../../twiml_templates/unknown_number.xml"),
            Self::Hangup => include_str!("../../twiml_templates/hangup.xml"),
            Self::Whisper => include_str!("../../twiml_templates/whisper.xml"),
            Self::Screen => include_str!("../../twiml_templates/screen.xml"),
            Self::Connect => include_str!("../../twiml_templates/connect.xml"),
            Self::Blocked => include_str!("../../twiml_templates/blocked.xml"),
        }
    }

    /// Placeholders the template may use.
    fn allowed(self) -> &'static [&'static str] {
        match self {
            Self::DialNumber => &[
                "action_url",
                "status_url",
                "timeout",
                "number",
                "send_digits",
                "caller_id",
                "answer_on_bridge",
                "record",
                "recording_url",
                "whisper_url",
                "machine_detection",
                "amd_url",
            ],
            Self::DialSip => &[
                "action_url",
                "status_url",
                "timeout",
                "sip_uri",
                "caller_id",
                "answer_on_bridge",
                "record",
                "recording_url",
                "whisper_url",
                "machine_detection",
                "amd_url",
                "sip_username",
                "sip_password",
            ],
            Self::Redirect => &["redirect_url"],
            Self::End | Self::UnknownNumber | Self::Hangup | Self::Blocked => &["message"],
            Self::Whisper => &["message", "audio_url"],
            Self::Screen => &["screen_url", "message", "audio_url"],
            Self::Connect => &[],
        }
    }

    /// Placeholders without which the call could not go on as Switchboard expects.
    fn required(self) -> &'static [&'static str] {
        match self {
            Self::DialNumber => &["action_url", "number", "whisper_url", "recording_url"],
            Self::DialSip => &["action_url", "sip_uri", "whisper_url", "recording_url"],
            Self::Redirect => &["redirect_url"],
            Self::Screen => &["screen_url"],
            Self::End
            | Self::UnknownNumber
            | Self::Hangup
            | Self::Whisper
            | Self::Connect
            | Self::Blocked => &[],
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where a template is wrong, as an operator finds it in an editor (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct TemplateError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Slot(&'static str),
}

/// Text with placeholders.
#[derive(Debug, Clone)]
struct Text(Vec<Piece>);

impl Text {
    fn render(&self, values: &Values<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Slot(name) => out.extend(values.get(name).chars().filter(|&c| allowed_in_xml(c))),
            }
        }
        out
    }

    fn is_lone_slot(&self) -> bool {
        matches!(self.0.as_slice(), [Piece::Slot(_)])
    }
}

/// XML 1.0 forbids most control characters even escaped; they are dropped.
fn allowed_in_xml(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

#[derive(Debug, Clone)]
enum Node {
    Start {
        name: String,
        attributes: Vec<(String, Text)>,
    },
    End,
    Text(Text),
}

#[derive(Debug, Clone)]
struct Template {
    nodes: Vec<Node>,
}

/// Values for a template's placeholders; a missing one renders empty.
pub struct Values<'a>(pub &'a [(&'static str, &'a str)]);

impl Values<'_> {
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| *key == name)
            .map_or("", |(_, value)| value)
    }
}

/// The template set in use.
#[derive(Debug, Clone)]
pub struct Templates {
    templates: Vec<Template>,
}

/// The document every renderer falls back to if writing ever failed: the call ends cleanly.
const HANGUP: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>"#;

impl Templates {
    /// The templates built into the binary.
    pub fn builtin() -> Result<Self, TemplateError> {
        Self::parse(|name| {
            (
                format!("(built in) {}", name.file_name()),
                name.builtin().to_owned(),
            )
        })
    }

    /// Parses every template from `source`, which gives a label for messages (a file path) and
    /// the text.
    pub fn parse(mut source: impl FnMut(TemplateName) -> (String, String)) -> Result<Self, TemplateError> {
        let templates = TemplateName::ALL
            .into_iter()
            .map(|name| {
                let (label, text) = source(name);
                parse_template(name, &label, &text)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { templates })
    }

    /// Renders a template: `<?xml …?>` first, nothing before it, no whitespace between elements.
    pub fn render(&self, name: TemplateName, values: &Values<'_>) -> String {
        match self.try_render(name, values) {
            Ok(document) => document,
            Err(error) => {
                tracing::error!(template = name.file_name(), %error, "TwiML could not be written; hanging up");
                HANGUP.to_owned()
            }
        }
    }

    fn try_render(&self, name: TemplateName, values: &Values<'_>) -> Result<String, xml::writer::Error> {
        let mut out = Vec::with_capacity(512);
        let mut writer = EmitterConfig::new()
            .perform_indent(false)
            .write_document_declaration(false)
            .create_writer(&mut out);
        writer.write(Out::StartDocument {
            version: XmlVersion::Version10,
            encoding: Some("UTF-8"),
            standalone: None,
        })?;
        let nodes = &self.templates[name.index()].nodes;
        let mut i = 0;
        while i < nodes.len() {
            let node = &nodes[i];
            i += 1;
            // An element holding nothing but a placeholder with no value is left out whole (an
            // empty `<Say/>` is an error to Twilio).
            if let (Node::Start { .. }, Some(Node::Text(text)), Some(Node::End)) =
                (node, nodes.get(i), nodes.get(i + 1))
                && text.is_lone_slot()
                && text.render(values).is_empty()
            {
                i += 2;
                continue;
            }
            match node {
                Node::Start { name, attributes } => {
                    let rendered: Vec<(&str, String)> = attributes
                        .iter()
                        .map(|(key, text)| (key.as_str(), text.render(values), text.is_lone_slot()))
                        .filter(|(_, value, lone)| !(*lone && value.is_empty()))
                        .map(|(key, value, _)| (key, value))
                        .collect();
                    let mut element = Out::start_element(name.as_str());
                    for (key, value) in &rendered {
                        element = element.attr(*key, value);
                    }
                    writer.write(element)?;
                }
                Node::End => writer.write(Out::end_element())?,
                Node::Text(text) => {
                    let value = text.render(values);
                    if !value.is_empty() {
                        writer.write(Out::characters(&value))?;
                    }
                }
            }
        }
        drop(writer);
        Ok(String::from_utf8(out).unwrap_or_else(|_| HANGUP.to_owned()))
    }
}

fn parse_template(name: TemplateName, label: &str, text: &str) -> Result<Template, TemplateError> {
    let error = |position: TextPosition, message: String| TemplateError {
        file: label.to_owned(),
        line: position.row + 1,
        column: position.column + 1,
        message,
    };
    let config = ParserConfig::new()
        .trim_whitespace(true)
        .ignore_comments(true)
        .cdata_to_characters(true)
        .coalesce_characters(true);
    let mut reader = EventReader::new_with_config(text.as_bytes(), config);
    let mut nodes = Vec::new();
    let mut used = Vec::new();
    let mut depth = 0;
    loop {
        let event = reader
            .next()
            .map_err(|e| error(e.position(), e.msg().to_string()))?;
        let position = reader.position();
        let mut slots = |raw: &str| -> Result<Text, TemplateError> {
            let text = parse_text(name, raw).map_err(|message| error(position, message))?;
            used.extend(text.0.iter().filter_map(|p| match p {
                Piece::Slot(slot) => Some(*slot),
                Piece::Literal(_) => None,
            }));
            Ok(text)
        };
        match event {
            In::StartElement {
                name: element,
                attributes,
                ..
            } => {
                if depth == 0 && element.local_name != "Response" {
                    return Err(error(
                        position,
                        format!(
                            "the root element must be <Response>, not <{}>",
                            element.local_name
                        ),
                    ));
                }
                depth += 1;
                let attributes = attributes
                    .into_iter()
                    .map(|a| Ok((a.name.local_name, slots(&a.value)?)))
                    .collect::<Result<_, TemplateError>>()?;
                nodes.push(Node::Start {
                    name: element.local_name,
                    attributes,
                });
            }
            In::EndElement { .. } => {
                depth -= 1;
                nodes.push(Node::End);
            }
            In::Characters(raw) => nodes.push(Node::Text(slots(&raw)?)),
            In::EndDocument => break,
            _ => {}
        }
    }
    if let Some(missing) = name.required().iter().find(|slot| !used.contains(slot)) {
        return Err(error(
            reader.position(),
            format!("the template must use {{{missing}}}"),
        ));
    }
    Ok(Template { nodes })
}

/// Splits text into literals and placeholders allowed in this template.
fn parse_text(name: TemplateName, raw: &str) -> Result<Text, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let slot: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let Some(known) = name.allowed().iter().find(|allowed| **allowed == slot) else {
                    return Err(format!(
                        "unknown placeholder {{{slot}}} in {}; it may use {}",
                        name.file_name(),
                        Listing(name.allowed())
                    ));
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Slot(known));
            }
            '}' => return Err("a lone `}`: write `}}` for a literal brace".into()),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(Text(pieces))
}

struct Listing(&'static [&'static str]);

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<String> = self.0.iter().map(|n| format!("{{{n}}}")).collect();
        f.write_str(&names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> Templates {
        Templates::builtin().unwrap()
    }

    fn with(name: TemplateName, text: &str) -> Result<Templates, TemplateError> {
        Templates::parse(|n| {
            let source = if n == name { text } else { n.builtin() };
            (format!("custom/{}", n.file_name()), source.to_owned())
        })
    }

    #[test]
    fn every_builtin_template_parses() {
        builtin();
    }

    #[test]
    fn a_dial_renders_compact_with_nothing_before_the_declaration() {
        let twiml = builtin().render(
            TemplateName::DialNumber,
            &Values(&[
                (
                    "action_url",
                    "https://sb.example.com/voice/calls/CA1/attempts/1/action",
                ),
                (
                    "status_url",
                    "https://sb.example.com/voice/calls/CA1/attempts/1/status",
                ),
                ("timeout", "25"),
                ("number", "+14155550101"),
            ]),
        );
        assert!(
            twiml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial "),
            "{twiml}"
        );
        assert!(twiml.contains(r#"action="https://sb.example.com/voice/calls/CA1/attempts/1/action""#));
        assert!(twiml.contains(r#"timeout="25""#));
        assert!(
            twiml.contains(">+14155550101</Number></Dial></Response>"),
            "{twiml}"
        );
        assert!(
            !twiml.contains("sendDigits"),
            "an empty lone placeholder drops its attribute"
        );
        for absent in [" record=", "recordingStatusCallback", " url=", "callerId"] {
            assert!(
                !twiml.contains(absent),
                "{absent} is left out when not set: {twiml}"
            );
        }
        assert!(!twiml.contains('\n'));
    }

    #[test]
    fn values_cannot_inject_markup() {
        let hostile = "\"/><Hangup/><Say>&amp;</Say><x a=\"";
        let twiml = builtin().render(
            TemplateName::End,
            &Values(&[("message", "Sorry <b>&</b> \"bye\"\u{0007}")]),
        );
        assert!(
            twiml.contains("<Say>Sorry &lt;b&gt;&amp;&lt;/b&gt; \"bye\"</Say>"),
            "{twiml}"
        );
        let twiml = builtin().render(
            TemplateName::DialNumber,
            &Values(&[("action_url", hostile), ("number", hostile)]),
        );
        // Read it back: still one Dial with one Number, the hostile text intact inside.
        let mut reader = EventReader::new(twiml.as_bytes());
        let mut elements = Vec::new();
        let mut texts = Vec::new();
        while let Ok(event) = reader.next() {
            match event {
                In::StartElement { name, attributes, .. } => {
                    if name.local_name == "Dial" {
                        assert_eq!(
                            attributes
                                .iter()
                                .find(|a| a.name.local_name == "action")
                                .unwrap()
                                .value,
                            hostile
                        );
                    }
                    elements.push(name.local_name);
                }
                In::Characters(text) => texts.push(text),
                In::EndDocument => break,
                _ => {}
            }
        }
        assert_eq!(elements, ["Response", "Dial", "Number"]);
        assert_eq!(texts, [hostile]);
    }

    #[test]
    fn an_unknown_placeholder_is_reported_with_file_and_line() {
        let err = with(
            TemplateName::End,
            "<Response>\n  <Say>{mesage}</Say>\n</Response>",
        )
        .unwrap_err();
        assert_eq!(err.file, "custom/end.xml");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("unknown placeholder {mesage}"), "{err}");
        assert!(err.message.contains("{message}"), "{err}");
    }

    #[test]
    fn bad_xml_is_reported_with_file_and_line() {
        let err = with(TemplateName::Hangup, "<Response>\n<Hangup>\n</Response>").unwrap_err();
        assert_eq!((err.file.as_str(), err.line), ("custom/hangup.xml", 3));
        let err = with(TemplateName::Hangup, "<Reply><Hangup/></Reply>").unwrap_err();
        assert!(err.message.contains("<Response>"), "{err}");
    }

    #[test]
    fn a_template_must_use_what_keeps_the_call_going() {
        let err = with(
            TemplateName::DialNumber,
            "<Response><Dial>{number}</Dial></Response>",
        )
        .unwrap_err();
        assert!(err.message.contains("{action_url}"), "{err}");
    }

    #[test]
    fn an_element_with_nothing_to_say_is_left_out() {
        let twiml = builtin().render(TemplateName::End, &Values(&[("message", "")]));
        assert!(twiml.ends_with("<Response><Hangup /></Response>"), "{twiml}");
    }

    #[test]
    fn operators_can_reword_and_restyle() {
        let templates = with(
            TemplateName::End,
            "<Response><Say voice=\"alice\">{{Sorry}} {message}</Say><Hangup/></Response>",
        )
        .unwrap();
        let twiml = templates.render(TemplateName::End, &Values(&[("message", "Bye.")]));
        assert!(
            twiml.ends_with(r#"<Response><Say voice="alice">{Sorry} Bye.</Say><Hangup /></Response>"#),
            "{twiml}"
        );
    }

    #[test]
    fn characters_xml_cannot_carry_never_reach_the_document() {
        let templates = Templates::builtin().unwrap();
        let message = "a\u{0}b\u{1}c\u{b}d\u{fffe}e\u{1f}f";
        let document = templates.render(TemplateName::End, &Values(&[("message", message)]));
        let events: Result<Vec<_>, _> = xml::EventReader::new(document.as_bytes()).into_iter().collect();
        assert!(events.is_ok(), "{document:?}: {events:?}");
        assert!(document.contains(">abcdef<"), "{document:?}");
    }
}
