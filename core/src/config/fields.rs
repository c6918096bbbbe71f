//! Reading the spanned TOML tree: positions, `${VAR}` expansion, typed values, and the keys
//! left over at the end (unknown, with a "did you mean").

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use authnz_plugin::{TomlTable, TomlValue};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ConfigIssue;

/// Why `${...}` could not be expanded.
#[derive(Debug)]
enum ExpandError {
    Missing(String),
    Syntax(String),
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Missing(name) => write!(f, "environment variable {name} is not set"),
            ExpandError::Syntax(message) => f.write_str(message),
        }
    }
}

pub(super) struct Context<'a> {
    pub(super) file: PathBuf,
    pub(super) text: &'a str,
    pub(super) issues: Vec<ConfigIssue>,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) base_dir: PathBuf,
    /// While reading an `[idps.*]` entry: the first unset variable, which makes the entry
    /// unavailable instead of failing the whole config.
    pub(super) missing_variable: Option<Option<String>>,
}

impl Context<'_> {
    pub(super) fn issue(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.issues.push(ConfigIssue {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Expands `${VAR}` and `${VAR:-default}`; a missing variable is an issue.
    pub(super) fn expand(&mut self, span: Range<usize>, key: &str, raw: &str) -> Option<String> {
        match self.try_expand(raw) {
            Ok(value) => Some(value),
            Err(ExpandError::Missing(name)) if self.missing_variable.is_some() => {
                self.mark_unavailable(format!("{key}: environment variable {name} is not set"));
                None
            }
            Err(err) => {
                self.issue(span, key, err.to_string());
                None
            }
        }
    }

    /// Expands `${VAR}` and `${VAR:-default}`, or says what is wrong.
    fn try_expand(&self, raw: &str) -> Result<String, ExpandError> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(ExpandError::Syntax("unterminated ${...}".to_string()));
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ExpandError::Syntax(format!(
                    "invalid variable name in ${{{inner}}}"
                )));
            }
            match ((self.env)(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(ExpandError::Missing(name.to_string())),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Records why the entry being read is unavailable (every reason, in file order).
    pub(super) fn mark_unavailable(&mut self, reason: String) {
        match &mut self.missing_variable {
            Some(Some(reasons)) => {
                reasons.push_str("; ");
                reasons.push_str(&reason);
            }
            Some(none @ None) => *none = Some(reason),
            None => {}
        }
    }

    pub(super) fn is_unavailable(&self) -> bool {
        matches!(self.missing_variable, Some(Some(_)))
    }

    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The keys of one table, taken one by one; what is left at the end is unknown.
pub(super) struct Fields<'i> {
    pub(super) prefix: String,
    pub(super) span: Range<usize>,
    pub(super) entries: Vec<(Spanned<std::borrow::Cow<'i, str>>, Spanned<DeValue<'i>>)>,
    /// Every key asked for, present or not: what an unknown key may be a misspelling of.
    pub(super) known: Vec<String>,
}

impl<'i> Fields<'i> {
    pub(super) fn new(prefix: String, table: DeTable<'i>, span: Range<usize>) -> Self {
        Self {
            prefix,
            span,
            entries: table.into_iter().collect(),
            known: Vec::new(),
        }
    }

    pub(super) fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    pub(super) fn take(&mut self, name: &str) -> Option<Spanned<DeValue<'i>>> {
        self.known.push(name.to_string());
        let index = self
            .entries
            .iter()
            .position(|(key, _)| key.get_ref() == name)?;
        Some(self.entries.remove(index).1)
    }

    pub(super) fn take_table(&mut self, cx: &mut Context, name: &str) -> Option<Fields<'i>> {
        let value = self.take(name)?;
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(table) => Some(Fields::new(self.key(name), table, span)),
            _ => {
                cx.issue(span, &self.key(name), "expected a table");
                None
            }
        }
    }

    /// A string, with `${VAR}` expanded.
    pub(super) fn take_str(
        &mut self,
        cx: &mut Context,
        name: &str,
    ) -> Option<(String, Range<usize>)> {
        let value = self.take(name)?;
        let span = value.span();
        match value.get_ref().as_str() {
            Some(raw) => {
                let key = self.key(name);
                cx.expand(span.clone(), &key, raw)
                    .map(|value| (value, span))
            }
            None => {
                cx.issue(span, &self.key(name), "expected a string");
                None
            }
        }
    }

    pub(super) fn take_bool(&mut self, cx: &mut Context, name: &str) -> Option<bool> {
        let value = self.take(name)?;
        match value.get_ref().as_bool() {
            Some(flag) => Some(flag),
            None => {
                cx.issue(value.span(), &self.key(name), "expected true or false");
                None
            }
        }
    }

    pub(super) fn take_u64(&mut self, cx: &mut Context, name: &str) -> Option<(u64, Range<usize>)> {
        let value = self.take(name)?;
        let span = value.span();
        let parsed = value
            .get_ref()
            .as_integer()
            .and_then(|int| int.as_str().replace('_', "").parse::<u64>().ok());
        if parsed.is_none() {
            cx.issue(
                span.clone(),
                &self.key(name),
                "expected a positive whole number",
            );
        }
        parsed.map(|parsed| (parsed, span))
    }

    pub(super) fn take_str_list(&mut self, cx: &mut Context, name: &str) -> Option<Vec<String>> {
        self.take_str_items(cx, name)
            .map(|items| items.into_iter().map(|(item, _)| item).collect())
    }

    /// A list of strings, each with where it stands (to report a bad item at its place).
    pub(super) fn take_str_items(
        &mut self,
        cx: &mut Context,
        name: &str,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let value = self.take(name)?;
        let span = value.span();
        let key = self.key(name);
        let DeValue::Array(items) = value.into_inner() else {
            cx.issue(span, &key, "expected a list of strings");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(raw) => out.push((cx.expand(item.span(), &key, raw)?, item.span())),
                None => {
                    cx.issue(item.span(), &key, "expected a string");
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Reports every key left as unknown.
    pub(super) fn finish(mut self, cx: &mut Context) {
        for (key, _) in std::mem::take(&mut self.entries) {
            let path = self.key(key.get_ref());
            let message = match authnz_plugin::did_you_mean(
                key.get_ref(),
                self.known.iter().map(String::as_str),
            ) {
                Some(close) => format!("unknown key (did you mean `{close}`?)"),
                None => "unknown key".to_string(),
            };
            cx.issue(key.span(), &path, message);
        }
    }
}

/// Converts a spanned TOML value into a plain one, expanding `${VAR}` in strings.
pub(super) fn to_toml(
    cx: &mut Context,
    key: &str,
    span: Range<usize>,
    value: DeValue,
) -> Option<TomlValue> {
    Some(match value {
        DeValue::String(raw) => TomlValue::String(cx.expand(span, key, &raw)?),
        DeValue::Integer(int) => {
            let digits = int.as_str().replace('_', "");
            let digits = digits
                .trim_start_matches("0x")
                .trim_start_matches("0o")
                .trim_start_matches("0b");
            match i64::from_str_radix(digits, int.radix()) {
                Ok(number) => TomlValue::Integer(number),
                Err(_) => {
                    cx.issue(span, key, "integer out of range");
                    return None;
                }
            }
        }
        DeValue::Float(float) => match float.as_str().replace('_', "").parse::<f64>() {
            Ok(number) => TomlValue::Float(number),
            Err(_) => {
                cx.issue(span, key, "invalid float");
                return None;
            }
        },
        DeValue::Boolean(flag) => TomlValue::Boolean(flag),
        DeValue::Datetime(datetime) => TomlValue::Datetime(datetime),
        DeValue::Array(items) => {
            let mut out = Vec::new();
            for item in items.iter() {
                out.push(to_toml(cx, key, item.span(), item.get_ref().clone())?);
            }
            TomlValue::Array(out)
        }
        DeValue::Table(table) => {
            let mut out = TomlTable::new();
            for (name, value) in table {
                let nested = format!("{key}.{}", name.get_ref());
                let span = value.span();
                out.insert(
                    name.into_inner().into_owned(),
                    to_toml(cx, &nested, span, value.into_inner())?,
                );
            }
            TomlValue::Table(out)
        }
    })
}

/// Where an entry stands in the file: its dotted key (`idps.<name>`) and its table's span,
/// where problems of the entry as a whole are reported.
pub(super) struct Place {
    pub(super) prefix: String,
    pub(super) span: Range<usize>,
}

impl Place {
    /// The dotted key of one of the entry's keys.
    pub(super) fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
}
