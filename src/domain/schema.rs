//! How the value types that read and write a JSON form of their own (text checked by
//! `try_from`, an amount in cents written as a number) look in the OpenAPI document.
//!
//! By hand, as a derive would describe their Rust fields rather than what they read and write.
//! Each states the rule its `try_from` checks (lengths, patterns, bounds), so a client can check
//! a value before sending it; each is a named component, referred to wherever it is used.

use std::borrow::Cow;

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, RefOr,
        schema::{AdditionalProperties, KnownFormat, Schema, SchemaFormat, Type},
    },
};

use super::{
    block::{BlockEntry, BlockedCaller, CallerPattern},
    call::CallSid,
    destination::{Destination, REDACTED, SipCredential},
    dialing::{CallerId, Whisper},
    geo::{AreaCode, StateList, UsState},
    ids::Id,
    money::{Money, Total},
    phone::E164,
    plan::{CampaignBuyer, PlanEntity, Record, RoutingList, TrackingNumbers},
    postback::{PostbackEndpoint, PostbackSecret, PostbackUrl, Postbacks},
    schedule::{ClockTime, Shift, TimeZoneName},
    timeline::TimelineEntry,
    values::{Bounded, Name, SendDigits},
};

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

fn reference<T: ToSchema>() -> Ref {
    Ref::from_schema_name(<T as ToSchema>::name())
}

/// `ToSchema` and `PartialSchema` for a type, named as the type is; `=> [T, …]`: the components
/// its schema refers to, so that they are in the document too.
macro_rules! schema {
    ($($ty:ident $(=> [$($referred:ty),*])?: $schema:expr;)*) => {$(
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }

            #[allow(unused_variables)]
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                $($(
                    schemas.push((<$referred>::name().into_owned(), <$referred>::schema()));
                    <$referred>::schemas(schemas);
                )*)?
            }
        }
    )*};
}

schema! {
    CallSid: string("The provider's call id (`CallSid`).").pattern(Some("^[A-Za-z0-9_-]{2,64}$"));
    Money: ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(0))
        .maximum(Some(1_000_000))
        .description(Some("An amount, to the cent (`12.5`)."));
    Total: ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(0))
        .description(Some("A sum of amounts, to the cent (`1250.5`)."));
    E164: string(
        "A phone number in E.164 form (`+14155550100`). Formatting sent in (spaces, dashes, \
         parentheses) is removed.",
    );
    UsState: string("A US state, DC or a US territory, by its USPS code (`CA`).")
        .pattern(Some("^[A-Z]{2}$"));
    AreaCode: string("A North American area code.").pattern(Some("^[2-9][0-9]{2}$"));
    StateList: ArrayBuilder::new()
        .items(UsState::schema())
        .min_items(Some(1))
        .unique_items(true)
        .description(Some("US states, each once; at least one."));
    Name: string("Trimmed; no control characters.")
        .min_length(Some(1))
        .max_length(Some(200));
    SendDigits: string("DTMF: 0-9, `*`, `#`, and `w` for a half-second wait.")
        .pattern(Some("^[0-9*#wW]{1,32}$"));
    Destination: string("An E.164 number or a `sip:` (or `sips:`) URI.");
    SipCredential: string("Visible ASCII.").min_length(Some(1)).max_length(Some(128));
    CallerId: string(
        "What the buyer's phone shows: `caller` (the caller's number, the tracking number when \
         it is withheld), `tracking_number`, or a number in E.164 form.",
    );
    Whisper: OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .property("say", string("Spoken; `{campaign}` is replaced by the campaign's name."))
                .required("say")
                .additional_properties(Some(AdditionalProperties::FreeForm(false))),
        )
        .item(
            ObjectBuilder::new()
                .property(
                    "play",
                    string("An audio file's https:// address.").format(Some(SchemaFormat::Custom("uri".into()))),
                )
                .required("play")
                .additional_properties(Some(AdditionalProperties::FreeForm(false))),
        )
        .description(Some("Played to the buyer when it answers, before the caller is put through."));
    TimeZoneName: string("An IANA time zone (`America/New_York`).");
    ClockTime: string("A wall-clock time `HH:MM`, `00:00` to `24:00`.")
        .pattern(Some("^([01][0-9]|2[0-4]):[0-5][0-9]$"));
    Shift => [ClockTime]: ObjectBuilder::new()
        .property("open", reference::<ClockTime>())
        .required("open")
        .property("close", reference::<ClockTime>())
        .required("close")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some("A close earlier than the open runs past midnight."));
    TrackingNumbers => [E164]: ArrayBuilder::new()
        .items(reference::<E164>())
        .unique_items(true);
    RoutingList => [CampaignBuyer]: ArrayBuilder::new()
        .items(reference::<CampaignBuyer>())
        .description(Some("The buyers the campaign routes to, each once."));
    PostbackUrl: string("http(s); POSTed JSON.").format(Some(SchemaFormat::Custom("uri".into())));
    PostbackSecret: OneOfBuilder::new()
        .item(string("16 to 256 visible ASCII characters.").min_length(Some(16)).max_length(Some(256)))
        .item(string("What readers who may not see secrets get.").enum_values(Some([REDACTED])))
        .description(Some(
            "Signs every postback: `Switchboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 \
             of \"<t>.<body>\">`. Shown only to admin tokens.",
        ));
    Postbacks => [PostbackEndpoint]: ArrayBuilder::new()
        .items(reference::<PostbackEndpoint>())
        .max_items(Some(10))
        .description(Some("Told when its calls connect, convert, turn out duplicates and end."));
    CallerPattern: string("A number in E.164 form, or a prefix ending in `*` (`+1900*`).");
    // Each kind of event has fields of its own (a decision's verdicts run deep): the document
    // names the kinds and leaves their fields to the reader.
    TimelineEntry: ObjectBuilder::new()
        .property(
            "at",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .required("at")
        .property(
            "kind",
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some([
                "webhook",
                "decision",
                "reservation_claimed",
                "answered",
                "whispered",
                "screened",
                "recorded",
                "dial_ended",
                "publisher_settled",
                "conversion_reported",
                "conversion_returned",
                "blocked",
                "ended",
                "ignored",
            ])),
        )
        .required("kind")
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .description(Some(
            "What happened; the other fields depend on `kind` (a decision lists the verdict on \
             every buyer considered, with skip reasons).",
        ));
}

/// Every kind of id reads and writes as a UUID; one component says so for all.
impl<K> PartialSchema for Id<K> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .description(Some("A record's id (a UUIDv7: ids sort by creation)."))
            .into()
    }
}

impl<K> ToSchema for Id<K> {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Id")
    }
}

/// Inlined where used (`#[schema(inline)]`): each bound is its own setting.
impl<const MIN: u32, const MAX: u32, const DEFAULT: u32> PartialSchema for Bounded<MIN, MAX, DEFAULT> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(MIN))
            .maximum(Some(MAX))
            .default(Some(DEFAULT.into()))
            .into()
    }
}

impl<const MIN: u32, const MAX: u32, const DEFAULT: u32> ToSchema for Bounded<MIN, MAX, DEFAULT> {}

/// `T`'s fields and `more`, as one object: what a `#[serde(flatten)]` of `T` beside other fields
/// writes. Not an `allOf` of the two: a `T` that refuses unknown fields would refuse the others.
pub fn extended<T: ToSchema>(more: ObjectBuilder) -> RefOr<Schema> {
    let more = more.build();
    match T::schema() {
        RefOr::T(Schema::Object(mut object)) => {
            object.properties.extend(more.properties);
            object.required.extend(more.required);
            object.description = more.description.or(object.description);
            object.into()
        }
        // Not an object (no caller's `T` is): both must hold.
        other => AllOfBuilder::new().item(other).item(more).into(),
    }
}

fn uuid(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .description(Some(description))
}

fn timestamp(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .description(Some(description))
}

schema! {
    BlockEntry => [BlockedCaller]: extended::<BlockedCaller>(
        ObjectBuilder::new()
            .property("id", uuid("Assigned when it was created.").read_only(true))
            .required("id")
            .property("company_id", uuid("The company whose list it is on."))
            .required("company_id")
            .property("created_at", timestamp("When it was created.").read_only(true))
            .required("created_at")
            .description(Some("A block list entry as stored.")),
    );
}

/// A stored entity: its kind's fields, and what the store assigned (read-only: a body that
/// sends them back unchanged is taken, any other value is refused).
impl<T: PlanEntity> PartialSchema for Record<T> {
    fn schema() -> RefOr<Schema> {
        let uuid = |description| uuid(description).read_only(true);
        let timestamp = |description| timestamp(description).read_only(true);
        let mut fields = ObjectBuilder::new()
            .property("id", uuid("Assigned when it was created."))
            .required("id")
            .property("created_at", timestamp("When it was created."))
            .required("created_at")
            .property("updated_at", timestamp("When it last changed."))
            .required("updated_at");
        if T::OWNED_BY_COMPANY {
            fields = fields
                .property("company_id", uuid("The company it belongs to."))
                .required("company_id");
        }
        extended::<T>(fields.description(Some(format!(
            "A {} as stored: its fields, and the ones the store assigns (read-only).",
            T::KIND
        ))))
    }
}

impl<T: PlanEntity> ToSchema for Record<T> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("{}Record", <T as ToSchema>::name()))
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((<T as ToSchema>::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}
