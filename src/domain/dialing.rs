//! What the buyer sees and hears of a call: the caller ID on its phone, the caller's ringback
//! while it rings, an announcement (whisper) before the caller is put through, an optional
//! "press 1 to accept", and whether the conversation is recorded.
//!
//! Each is a setting of the plan (per buyer, some per campaign), read here into what one
//! `<Dial>` needs ([`DialSettings`]); rendering it is TwiML's business.

use std::fmt;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    call::Caller,
    phone::E164,
    plan::{Buyer, Campaign, Record},
};

/// Which number the buyer sees calling (`<Dial callerId>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CallerId {
    /// The caller's own number (the tracking number when the caller's is withheld or not a
    /// phone number).
    #[default]
    Caller,
    /// The tracking number the caller dialed, so the buyer knows which campaign it came from.
    TrackingNumber,
    /// A number of the operator's (it must be one the provider lets the account present).
    Number(E164),
}

impl CallerId {
    /// The number to present for a call from `caller` to `tracking_number`. Always a phone
    /// number when one is known: with none, the provider passes on the caller's raw caller ID,
    /// which a buyer's carrier may refuse (Twilio error 13214), so an anonymous caller would fail
    /// at every buyer.
    pub fn for_call(&self, caller: &Caller, tracking_number: Option<&E164>) -> Option<E164> {
        match self {
            Self::Caller => caller.number().or(tracking_number).cloned(),
            Self::TrackingNumber => tracking_number.or(caller.number()).cloned(),
            Self::Number(number) => Some(number.clone()),
        }
    }
}

impl TryFrom<String> for CallerId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.trim() {
            "caller" => Ok(Self::Caller),
            "tracking_number" => Ok(Self::TrackingNumber),
            number if number.starts_with('+') => E164::normalise(number)
                .map(Self::Number)
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "`{other}` is not a caller ID: write `caller`, `tracking_number` or a number in \
                 international form (+14155550100)"
            )),
        }
    }
}

impl From<CallerId> for String {
    fn from(caller_id: CallerId) -> Self {
        caller_id.to_string()
    }
}

impl fmt::Display for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Caller => f.write_str("caller"),
            Self::TrackingNumber => f.write_str("tracking_number"),
            Self::Number(number) => f.write_str(number.as_str()),
        }
    }
}

/// Whether a call is recorded, and from when. Recordings are dual channel (caller and buyer on
/// a channel each), which is what quality reviews and disputes need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingMode {
    #[default]
    Off,
    /// From the buyer's answer: the conversation.
    FromAnswer,
    /// From the moment the buyer's phone rings: what the caller heard too.
    FromRinging,
}

impl RecordingMode {
    /// `<Dial record>`'s value, if the call is recorded.
    pub fn twiml(self) -> Option<&'static str> {
        match self {
            Self::Off => None,
            Self::FromAnswer => Some("record-from-answer-dual"),
            Self::FromRinging => Some("record-from-ringing-dual"),
        }
    }
}

/// What a buyer hears when it answers, before the caller is put through: `{"say": …}` or
/// `{"play": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "WhisperFields")]
pub enum Whisper {
    /// Spoken by the provider's text-to-speech. `{campaign}` is replaced by the campaign's name.
    Say(Spoken),
    /// An audio file the provider fetches and plays.
    Play(AudioUrl),
}

/// A whisper as written, before it is known to be one or the other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhisperFields {
    #[serde(default)]
    say: Option<Spoken>,
    #[serde(default)]
    play: Option<AudioUrl>,
}

impl TryFrom<WhisperFields> for Whisper {
    type Error = String;

    fn try_from(fields: WhisperFields) -> Result<Self, Self::Error> {
        match (fields.say, fields.play) {
            (Some(text), None) => Ok(Self::Say(text)),
            (None, Some(url)) => Ok(Self::Play(url)),
            (Some(_), Some(_)) => {
                Err("give `say` or `play`, not both (a patch sets the other to null)".into())
            }
            (None, None) => Err("give `say` (text to speak) or `play` (an audio file's address)".into()),
        }
    }
}

impl Whisper {
    /// The text to say, with `{campaign}` filled in, or the audio to play.
    pub fn for_campaign(&self, campaign: &str) -> Announcement {
        match self {
            Self::Say(text) => Announcement::Say(text.as_str().replace("{campaign}", campaign)),
            Self::Play(url) => Announcement::Play(url.as_str().to_owned()),
        }
    }
}

/// A whisper ready to be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    Say(String),
    Play(String),
}

impl Announcement {
    /// About how long it takes to hear, as far as Switchboard can know: spoken text at a
    /// speaking pace (150 words a minute, and half a second to start); an audio file's length is
    /// not known, and counts as nothing.
    pub fn estimated_length(&self) -> SignedDuration {
        match self {
            Self::Say(text) => {
                let words = text.split_whitespace().count() as i64;
                SignedDuration::from_millis(500 + words * 400)
            }
            Self::Play(_) => SignedDuration::ZERO,
        }
    }
}

/// Text to be spoken: 1 to 1000 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Spoken(String);

impl Spoken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Spoken {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 1000 {
            return Err("must be 1 to 1000 characters".into());
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(trimmed.to_owned()))
    }
}

impl From<Spoken> for String {
    fn from(text: Spoken) -> Self {
        text.0
    }
}

/// The address of an audio file: `https://` (or `http://`), as `<Play>` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AudioUrl(String);

impl AudioUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AudioUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let url = url::Url::parse(text.trim()).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(format!("`{text}` must be an https:// (or http://) address"));
        }
        Ok(Self(url.into()))
    }
}

impl From<AudioUrl> for String {
    fn from(url: AudioUrl) -> Self {
        url.0
    }
}

/// Whether a buyer must accept each call before it is put through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Screen {
    /// Put through as soon as the buyer answers (after the whisper, if any).
    #[default]
    #[serde(rename = "none")]
    None,
    /// The buyer hears the whisper and "press 1 to accept": no key, or another key, and the leg
    /// counts as unanswered, so routing goes on to the next buyer. Keeps voicemail and IVRs
    /// from taking (and converting) calls.
    #[serde(rename = "press-1")]
    Press1,
    /// The provider listens to who answers (answering machine detection, `machineDetection`)
    /// before the buyer's leg runs the whisper: a machine or a fax is hung up on and the leg
    /// counts as unanswered, so routing goes on. A person, or a verdict of `unknown`, is put
    /// through. No key to press, at the price of a few seconds of detection.
    #[serde(rename = "machine-detection")]
    MachineDetection,
}

/// Where a screened attempt stands: the buyer's leg answers, hears the whisper, and presses a
/// key or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Screening {
    /// Dialed (or picked up and listening): no key yet.
    Pending,
    /// Pressed 1: the caller is put through.
    Accepted,
    /// Pressed another key.
    Refused,
    /// Pressed nothing before the prompt timed out (voicemail, an IVR, a person who walked off).
    NoKey,
    /// Answering machine detection heard a machine or a fax.
    Machine,
    /// The call ended (the caller hung up) while the buyer was still being screened: nobody
    /// was put through, and nothing the buyer does after changes that.
    CallerGone,
}

impl Screening {
    /// The screening that a key press (or none) comes to.
    pub fn of_digits(digits: &str) -> Self {
        match digits.trim() {
            "1" => Self::Accepted,
            "" => Self::NoKey,
            _ => Self::Refused,
        }
    }

    /// What answering machine detection's `AnsweredBy` comes to. `unknown` (detection could not
    /// tell) is put through: the provider's detection leans to people, and a person kept from
    /// a caller costs more than a voicemail reached.
    pub fn of_answered_by(answered_by: Option<&str>) -> Self {
        match answered_by.map(str::trim) {
            Some(verdict) if verdict.starts_with("machine") || verdict == "fax" => Self::Machine,
            _ => Self::Accepted,
        }
    }
}

/// Everything one `<Dial>` to a buyer needs besides whom to ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialSettings {
    /// `callerId`; `None` only when neither the caller nor the tracking number is a number.
    pub caller_id: Option<E164>,
    /// `answerOnBridge`: the caller hears the buyer's ringback and is not answered (nor billed)
    /// until a buyer picks up.
    pub answer_on_bridge: bool,
    pub record: RecordingMode,
    /// Whether the buyer's answer runs Switchboard's whisper document (an announcement, a
    /// press-1 prompt, or both) before the caller is put through.
    pub whisper: bool,
    /// Whether the provider runs answering machine detection on the buyer's leg first.
    pub machine_detection: bool,
}

impl DialSettings {
    /// The settings for dialing `buyer` in `campaign` for a call from `caller` that dialed
    /// `tracking_number`: the buyer's own, else the campaign's. `screened`: the attempt was
    /// made screened (settled when it is made, so a buyer switched to press-1 mid-call does not
    /// make a leg already ringing wait for a key); how, the buyer says.
    pub fn of(
        buyer: &Record<Buyer>,
        campaign: Option<&Record<Campaign>>,
        caller: &Caller,
        tracking_number: Option<&E164>,
        screened: bool,
    ) -> Self {
        let spec = &buyer.spec;
        Self {
            caller_id: spec.caller_id.for_call(caller, tracking_number),
            answer_on_bridge: campaign.is_none_or(|c| c.spec.answer_on_bridge),
            record: (spec.record)
                .or(campaign.map(|c| c.spec.record))
                .unwrap_or_default(),
            whisper: screened || whisper_for(buyer, campaign).is_some(),
            machine_detection: screened && spec.screen == Screen::MachineDetection,
        }
    }
}

/// The whisper a buyer hears in a campaign: its own, else the campaign's.
pub fn whisper_for<'a>(
    buyer: &'a Record<Buyer>,
    campaign: Option<&'a Record<Campaign>>,
) -> Option<&'a Whisper> {
    buyer
        .spec
        .whisper
        .as_ref()
        .or_else(|| campaign.and_then(|c| c.spec.whisper.as_ref()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn number(text: &str) -> E164 {
        E164::from_provider(text).unwrap()
    }

    #[test]
    fn the_buyer_always_sees_a_phone_number_when_one_is_known() {
        let tracking = number("+18005550100");
        let caller = Caller::from_provider("+14155550123");
        let withheld = Caller::from_provider("anonymous");
        assert_eq!(
            CallerId::Caller.for_call(&caller, Some(&tracking)),
            Some(number("+14155550123"))
        );
        assert_eq!(
            CallerId::Caller.for_call(&withheld, Some(&tracking)),
            Some(tracking.clone()),
            "a withheld caller shows the tracking number"
        );
        assert_eq!(
            CallerId::TrackingNumber.for_call(&caller, Some(&tracking)),
            Some(tracking.clone())
        );
        let own = CallerId::Number(number("+14155550199"));
        assert_eq!(
            own.for_call(&withheld, Some(&tracking)),
            Some(number("+14155550199"))
        );
        assert_eq!(CallerId::Caller.for_call(&withheld, None), None);
    }

    #[test]
    fn caller_ids_read_as_operators_write_them() {
        let read = |text: &str| serde_json::from_value::<CallerId>(json!(text));
        assert_eq!(read("caller").unwrap(), CallerId::Caller);
        assert_eq!(read("tracking_number").unwrap(), CallerId::TrackingNumber);
        assert_eq!(
            read("+1 (415) 555-0199").unwrap(),
            CallerId::Number(number("+14155550199"))
        );
        assert_eq!(
            serde_json::to_value(read("+1 415 555 0199").unwrap()).unwrap(),
            json!("+14155550199")
        );
        for bad in ["callee", "", "4155550199", "+15555550100"] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn recording_is_dual_channel_from_the_answer_or_the_ringing() {
        let read = |text: &str| serde_json::from_value::<RecordingMode>(json!(text));
        assert_eq!(read("off").unwrap().twiml(), None);
        assert_eq!(
            read("from-answer").unwrap().twiml(),
            Some("record-from-answer-dual")
        );
        assert_eq!(
            read("from-ringing").unwrap().twiml(),
            Some("record-from-ringing-dual")
        );
        assert!(read("always").is_err());
    }

    #[test]
    fn whispers_say_text_or_play_audio() {
        let say: Whisper = serde_json::from_value(json!({"say": "Call from {campaign}, press 1"})).unwrap();
        assert_eq!(
            say.for_campaign("Auto Insurance"),
            Announcement::Say("Call from Auto Insurance, press 1".into())
        );
        let play: Whisper = serde_json::from_value(json!({"play": "https://cdn.example.com/w.mp3"})).unwrap();
        assert_eq!(
            play.for_campaign("x"),
            Announcement::Play("https://cdn.example.com/w.mp3".into())
        );
        for bad in [
            json!({"say": ""}),
            json!({"play": "ftp://example.com/a.mp3"}),
            json!({"play": "not a url"}),
            json!({"say": "a", "play": "https://example.com/a.mp3"}),
            json!({"shout": "a"}),
        ] {
            assert!(serde_json::from_value::<Whisper>(bad.clone()).is_err(), "{bad}");
        }
    }

    fn record<T: crate::domain::plan::PlanEntity>(spec: serde_json::Value) -> Record<T> {
        crate::domain::plan::record_of(None, spec)
    }

    #[test]
    fn a_buyers_own_settings_win_over_its_campaigns() {
        let caller = Caller::from_provider("+14155550123");
        let plain: Record<Buyer> = record(json!({"name": "A", "destination": "+14155550101"}));
        let own: Record<Buyer> = record(json!({
            "name": "B", "destination": "+14155550102", "record": "off",
            "whisper": {"say": "Mine."}, "caller_id": "tracking_number",
        }));
        let campaign: Record<Campaign> = record(json!({
            "name": "C", "record": "from-ringing", "answer_on_bridge": false, "whisper": {"say": "Ours."},
        }));
        let tracking = number("+18005550100");
        let settings = DialSettings::of(&plain, Some(&campaign), &caller, Some(&tracking), false);
        assert_eq!(
            settings,
            DialSettings {
                caller_id: Some(number("+14155550123")),
                answer_on_bridge: false,
                record: RecordingMode::FromRinging,
                whisper: true,
                machine_detection: false,
            }
        );
        assert_eq!(
            whisper_for(&plain, Some(&campaign)),
            campaign.spec.whisper.as_ref()
        );
        let settings = DialSettings::of(&own, Some(&campaign), &caller, Some(&tracking), false);
        assert_eq!(
            (settings.record, settings.caller_id),
            (RecordingMode::Off, Some(tracking.clone()))
        );
        assert_eq!(whisper_for(&own, Some(&campaign)), own.spec.whisper.as_ref());
        // Alone, the buyer rings with ringback, unrecorded, and no whisper unless it screens.
        let alone = DialSettings::of(&plain, None, &caller, Some(&tracking), false);
        assert_eq!(
            (alone.answer_on_bridge, alone.record, alone.whisper),
            (true, RecordingMode::Off, false)
        );
        assert!(
            DialSettings::of(&plain, None, &caller, Some(&tracking), true).whisper,
            "the prompt needs the document"
        );
    }

    #[test]
    fn a_key_press_is_one_accepted_another_refused_nothing_no_key() {
        assert_eq!(Screening::of_digits("1"), Screening::Accepted);
        assert_eq!(Screening::of_digits("2"), Screening::Refused);
        assert_eq!(Screening::of_digits("#"), Screening::Refused);
        assert_eq!(Screening::of_digits(""), Screening::NoKey);
        let read = |text: &str| serde_json::from_value::<Screen>(json!(text));
        assert_eq!(read("press-1").unwrap(), Screen::Press1);
        assert_eq!(read("none").unwrap(), Screen::None);
        assert!(read("press_1").is_err());
    }
}
