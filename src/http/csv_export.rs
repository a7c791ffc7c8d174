//! CSV exports of any size: read from the store a page at a time and streamed as read, so
//! neither the server nor the client ever holds the whole export.

use std::future::Future;

use actix_web::{HttpResponse, http::header, web::Bytes};
use futures_util::stream;
use serde::Serialize;

use super::error::ApiError;

/// Rows read per page.
pub const PAGE: u32 = 1000;

/// A CSV response named `filename`: the header `columns`, then the rows of every page `next`
/// reads, from the cursor `None` (the first page) on. `next` answers a page and the cursor of
/// the page after it (`None` on the last page). A store failure mid-way cuts the response short
/// (the chunked body never ends properly), so a partial export cannot pass for a whole one.
pub fn streamed<R, C, F, Fut>(filename: &str, columns: &'static [&'static str], next: F) -> HttpResponse
where
    R: Serialize + 'static,
    C: 'static,
    F: Fn(Option<C>) -> Fut + 'static,
    Fut: Future<Output = Result<(Vec<R>, Option<C>), ApiError>> + 'static,
{
    enum Step<C> {
        Header,
        Page(Option<C>),
        Done,
    }
    let body = stream::try_unfold((Step::Header, next), move |(step, next)| async move {
        match step {
            Step::Header => {
                let bytes = encode(&[columns])?;
                Ok::<_, ApiError>(Some((bytes, (Step::Page(None), next))))
            }
            Step::Page(cursor) => {
                let (rows, after) = next(cursor).await?;
                let bytes = encode(&rows)?;
                let step = match after {
                    Some(after) => Step::Page(Some(after)),
                    None => Step::Done,
                };
                Ok(Some((bytes, (step, next))))
            }
            Step::Done => Ok(None),
        }
    });
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .streaming(body)
}

/// Text from outside (a caller ID, a number dialed) as a cell a spreadsheet shows and never
/// runs: one that would read as a formula (`=`, `@`, or `+`/`-` not followed by digits alone)
/// gets a leading `'`. A phone number such as `+14155550123` stays as it is.
pub fn cell(text: String) -> String {
    let formula = match text.as_bytes().first() {
        Some(b'=' | b'@' | b'\t' | b'\r') => true,
        Some(b'+' | b'-') => !text[1..].bytes().all(|b| b.is_ascii_digit()) || text.len() == 1,
        _ => false,
    };
    if formula { format!("'{text}") } else { text }
}

fn encode<R: Serialize>(rows: &[R]) -> Result<Bytes, ApiError> {
    let failed = |error: &dyn std::fmt::Display| {
        tracing::error!(%error, "cannot write CSV");
        ApiError::Internal
    };
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    for row in rows {
        writer.serialize(row).map_err(|e| failed(&e))?;
    }
    let bytes = writer.into_inner().map_err(|e| failed(&e))?;
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_would_run_as_formulas_are_kept_as_text() {
        for (raw, shown) in [
            ("+14155550123", "+14155550123"),
            ("anonymous", "anonymous"),
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("+", "'+"),
        ] {
            assert_eq!(cell(raw.to_owned()), shown, "{raw}");
        }
    }
}
