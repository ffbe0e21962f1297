//! Store URLs as users write them on the command line and in config.

use crate::StoreError;
use std::path::PathBuf;

/// A parsed store location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// Embedded SQLite file (`sqlite:PATH` or a bare path).
    Sqlite(PathBuf),
}

impl StoreUrl {
    /// Parses `sqlite:PATH`, `sqlite://PATH` or a bare path.
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let url_trim = url.trim();
        if url_trim.is_empty() {
            return Err(bad("empty; use sqlite:PATH or a file path (or --no-store)"));
        }
        if let Some(rest) = url_trim.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(bad("sqlite: needs a file path, e.g. sqlite:netspectra.db"));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if url_trim.starts_with("clickhouse:") {
            return Err(bad(
                "the ClickHouse store is not available in this build; use sqlite:PATH",
            ));
        }
        if let Some((scheme, _)) = url_trim.split_once("://") {
            return Err(bad(&format!(
                "unknown scheme `{scheme}`; allowed: sqlite:PATH or a file path"
            )));
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(url_trim)))
    }
}
