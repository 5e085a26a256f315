//! Connection strings made safe to print, whatever they hold.
//!
//! Redaction must never depend on the string being well formed: the strings that reach an
//! error message are precisely the ones a driver could not read (an unterminated quote, a
//! space the user meant as part of a password). So this keeps an **allow-list**: only values
//! of keys known to be harmless (host, port, database, user, options that tune a connection)
//! are shown; every other value, every token that is not `key=value`, a key nobody listed
//! (with its value: a pasted password may hold `word=`), and a quoted value that never closes
//! (to the end of the string) become `***`. Each syntax quotes as its driver does (libpq only
//! with `'`; ADO with `'`, `"` and `{}`), and whatever follows a closing quote up to the
//! separator is hidden with the value. A URL's user information after the user name is hidden
//! up to the last `@`, and its query values are treated like keys.
//!
//! [`scrub`] applies the same knowledge to any text (a driver's message that quotes part of
//! the string): every hidden value, and every word of it, is replaced where it appears.

/// Keys whose values are shown (compared case-insensitively, spaces and `_` ignored): what
/// names the server, the database and the login, and connection tuning. Anything else is
/// hidden, so a new kind of secret is hidden before anyone lists it.
const SHOWN: &[&str] = &[
    // libpq and URL query
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "sslmode",
    "connecttimeout",
    "applicationname",
    "targetsessionattrs",
    "keepalives",
    "keepalivesidle",
    "channelbinding",
    "loadbalancehosts",
    // ADO (SQL Server, SQLite)
    "server",
    "datasource",
    "address",
    "addr",
    "networkaddress",
    "initialcatalog",
    "database",
    "userid",
    "uid",
    "encrypt",
    "trustservercertificate",
    "integratedsecurity",
    "trustedconnection",
    "connectiontimeout",
    "multipleactiveresultsets",
    "multisubnetfailover",
    "applicationintent",
    "pooling",
    "filename",
    "mode",
    "cache",
];

/// Keys that hold secrets or paths to them: their names are shown (so a reader sees which
/// setting is there), their values never. A key in neither list is hidden whole.
const NAMED: &[&str] = &[
    "password",
    "pwd",
    "sslpassword",
    "passfile",
    "sslkey",
    "sslcert",
    "sslrootcert",
    "sslcrl",
    "options",
    "service",
    "authentication",
    "accesstoken",
    "persistsecurityinfo",
];

/// What stands for a hidden value.
pub const HIDDEN: &str = "***";

fn folded(key: &str) -> String {
    key.chars().filter(|c| !c.is_whitespace() && *c != '_').flat_map(char::to_lowercase).collect()
}

/// The value of `key` may be shown.
fn shown(key: &str) -> bool {
    SHOWN.contains(&folded(key).as_str())
}

/// The name `key` may be shown (its value perhaps not).
fn known(key: &str) -> bool {
    let key = folded(key);
    SHOWN.contains(&key.as_str()) || NAMED.contains(&key.as_str())
}

/// `conn` with every value that is not known to be harmless replaced by `***` (see the module
/// docs); never fails, whatever `conn` holds.
pub fn connection_string(conn: &str) -> String {
    pieces(conn).into_iter().map(|p| if p.hidden { HIDDEN.to_owned() } else { p.text.to_owned() }).collect()
}

/// Replaces in `text` every value [`connection_string`] hides in `conn`, and each word of it
/// (four characters or more), with `***`: for messages that may quote part of the string.
pub fn scrub(text: &str, conn: &str) -> String {
    replace_all(text, &secrets_of(conn)).into_owned()
}

/// The values [`connection_string`] hides in `conn` and their words, longest first.
fn secrets_of(conn: &str) -> Vec<String> {
    let mut secrets: Vec<String> = Vec::new();
    for piece in pieces(conn).into_iter().filter(|p| p.hidden) {
        secrets.extend(words_of(piece.text));
    }
    secrets
}

/// A secret and its words (split at spaces, quotes and separators), those long enough to
/// be searched for without hiding ordinary words.
fn words_of(secret: &str) -> Vec<String> {
    let trimmed = secret.trim();
    let mut out = vec![trimmed.to_owned()];
    out.extend(trimmed.split(|c: char| c.is_whitespace() || "'\"{};=&\\".contains(c)).map(str::to_owned));
    out.retain(|s| s.chars().count() >= 4);
    out
}

fn replace_all<'t>(text: &'t str, secrets: &[String]) -> std::borrow::Cow<'t, str> {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| text.contains(s.as_str())).collect();
    if secrets.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    // Longest first, so a word never leaves the rest of its value behind.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    std::borrow::Cow::Owned(secrets.iter().fold(text.to_owned(), |text, secret| text.replace(secret.as_str(), HIDDEN)))
}

/// The secrets this process read from its configuration (see [`remember`]).
static KNOWN: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Remembers the hidden values of a configured connection string, so that [`scrub_known`]
/// (every log line, every printed error) hides them wherever they turn up, whatever quoted
/// them: a driver's message, a stored last error, a panic.
pub fn remember(conn: &str) {
    remember_all(secrets_of(conn));
}

/// Remembers a configured secret (a partner's API secret, an `env:` value).
pub fn remember_secret(secret: &str) {
    remember_all(words_of(secret));
}

fn remember_all(secrets: Vec<String>) {
    let mut known = KNOWN.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    for secret in secrets {
        if !known.contains(&secret) {
            known.push(secret);
        }
    }
}

/// `text` with every remembered secret replaced by `***`.
pub fn scrub_known(text: &str) -> std::borrow::Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    if known.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    replace_all(text, &known)
}

/// A run of the string, shown as it is or hidden.
struct Piece<'a> {
    text: &'a str,
    hidden: bool,
}

fn keep(text: &str) -> Piece<'_> {
    Piece { text, hidden: false }
}

fn hide(text: &str) -> Piece<'_> {
    Piece { text, hidden: true }
}

fn pieces(conn: &str) -> Vec<Piece<'_>> {
    match conn.find("://") {
        Some(at) if conn[..at].chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => url(conn, at),
        _ => {
            // ADO separates with `;` and its keys may hold spaces (`Data Source=x.db`).
            let first_key = conn.split('=').next().unwrap_or_default().trim();
            let ado = conn.contains(';') || first_key.contains(char::is_whitespace);
            keywords(conn, if ado { Separator::Semicolon } else { Separator::Space })
        }
    }
}

/// `scheme://user:secret@host:port/db?key=value&…`
fn url(conn: &str, at: usize) -> Vec<Piece<'_>> {
    let start = at + 3;
    let mut out = vec![keep(&conn[..start])];
    let mut rest_at = start;
    // The password may hold any character, `/` `?` `@` included: everything from the
    // first `:` to the last `@` is hidden.
    if let Some(last_at) = conn[start..].rfind('@').map(|i| start + i) {
        match conn[start..last_at].find(':').map(|i| start + i) {
            Some(colon) => {
                out.push(keep(&conn[start..=colon]));
                out.push(hide(&conn[colon + 1..last_at]));
            }
            None => out.push(keep(&conn[start..last_at])),
        }
        rest_at = last_at;
    }
    let rest = &conn[rest_at..];
    let Some(q) = rest.find('?') else {
        out.push(keep(rest));
        return out;
    };
    out.push(keep(&rest[..=q]));
    let query = &rest[q + 1..];
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push(keep("&"));
        }
        match pair.split_once('=') {
            Some((key, value)) if shown(key) => out.push(keep(&pair[..key.len() + 1 + value.len()])),
            Some((key, _)) if known(key) => {
                out.push(keep(&pair[..=key.len()]));
                out.push(hide(&pair[key.len() + 1..]));
            }
            None if pair.is_empty() => {}
            _ => out.push(hide(pair)),
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Separator {
    /// ADO: `key=value;key=value` (values may hold spaces).
    Semicolon,
    /// libpq: `key=value key=value` (`\` escapes a space in a bare value).
    Space,
}

impl Separator {
    fn ends_value(self, c: char) -> bool {
        match self {
            Separator::Semicolon => c == ';',
            Separator::Space => c.is_whitespace(),
        }
    }

    fn other(self) -> Self {
        match self {
            Separator::Semicolon => Separator::Space,
            Separator::Space => Separator::Semicolon,
        }
    }

    fn between(self, c: char) -> bool {
        c.is_whitespace() || (self == Separator::Semicolon && c == ';')
    }
}

/// ADO or libpq keyword form.
fn keywords(conn: &str, sep: Separator) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < conn.len() {
        let rest = &conn[i..];
        let gap = rest.find(|c: char| !sep.between(c)).unwrap_or(rest.len());
        if gap > 0 {
            out.push(keep(&rest[..gap]));
            i += gap;
            continue;
        }
        let Some((key, eq)) = key_at(rest, sep) else {
            // Not `key=value`: hidden up to the next separator.
            let end = bare_end(rest, sep);
            out.push(hide(&rest[..end]));
            i += end;
            continue;
        };
        let after = &rest[eq + 1..];
        let lead = after.len() - after.trim_start_matches([' ', '\t']).len();
        let value_len = lead + value_end(&after[lead..], sep);
        let value = &after[..value_len];
        i += eq + 1 + value_len;
        if !known(key) {
            out.push(hide(&rest[..eq + 1 + value_len]));
            continue;
        }
        out.push(keep(&rest[..=eq]));
        if shown(key) && value.contains('=') {
            // A shown value never shows another key's value (`host=h password=x; …` read
            // as ADO): what looks like pairs inside it is redacted as the other syntax.
            let head = bare_end(value, sep.other());
            let own = &value[..head];
            out.push(if own.contains('=') { hide(own) } else { keep(own) });
            out.extend(keywords(&value[head..], sep.other()));
        } else {
            out.push(if shown(key) && !value.is_empty() { keep(value) } else { hide(value) });
        }
    }
    out
}

/// The key of a `key=value` starting `rest` and the index of its `=`.
fn key_at(rest: &str, sep: Separator) -> Option<(&str, usize)> {
    let eq = rest.find('=')?;
    let key = &rest[..eq];
    let word = |c: char| c.is_alphanumeric() || "_-. ".contains(c);
    let ok = !key.trim().is_empty()
        && key.chars().all(word)
        && (sep == Separator::Semicolon || !key.trim_end().contains(char::is_whitespace));
    ok.then(|| (key.trim(), eq))
}

/// The length of a value starting `value`: quoted (`'…'` with `\` escapes or `''`; in ADO
/// also `"…"` with `""` and `{…}` with `}}`) up to its close and on to the separator, or to
/// the end of the string when it never closes; bare up to the separator (a `\`-escaped space
/// continues a libpq value).
fn value_end(value: &str, sep: Separator) -> usize {
    let close = match (value.chars().next(), sep) {
        (Some('\''), _) => Some('\''),
        (Some('"'), Separator::Semicolon) => Some('"'),
        (Some('{'), Separator::Semicolon) => Some('}'),
        _ => None,
    };
    let Some(close) = close else { return bare_end(value, sep) };
    let mut chars = value.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\\' && close == '\'' {
            chars.next();
        } else if c == close {
            if chars.peek().is_some_and(|&(_, next)| next == close) {
                chars.next();
            } else {
                // Text glued to the closing quote belongs to no other key: hidden with it.
                let closed = i + c.len_utf8();
                return closed + bare_end(&value[closed..], sep);
            }
        }
    }
    value.len()
}

fn bare_end(value: &str, sep: Separator) -> usize {
    let mut chars = value.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' && sep == Separator::Space {
            chars.next();
        } else if sep.ends_value(c) {
            return i;
        }
    }
    value.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_where_and_who_hides_everything_else() {
        for (conn, want) in [
            ("host=db port=5432 user=u password=s3 dbname=x", "host=db port=5432 user=u password=*** dbname=x"),
            ("host=db password='a b\\' c' dbname=x", "host=db password=*** dbname=x"),
            ("host=db password='Unterminated dbname=x", "host=db password=***"),
            ("host=db password=First Second dbname=x", "host=db password=*** *** dbname=x"),
            ("host=db password=Tail\\ Secret99 dbname=x", "host=db password=*** dbname=x"),
            ("host=db sslpassword=k sslmode=require", "host=db sslpassword=*** sslmode=require"),
            ("Server=s;Password={Brace;Secret99};Database=d", "Server=s;Password=***;Database=d"),
            ("Server=s;Password=\"Quote;Secret99\";Database=d", "Server=s;Password=***;Database=d"),
            ("Server=s; Pwd = x y ;User Id=sa", "Server=s; Pwd =***;User Id=sa"),
            ("Data Source=x.db", "Data Source=x.db"),
            ("host=h port=1 password=P; dbname=x", "host=h port=1 password=***; dbname=x"),
            ("Server=s;Password=a;b=c;Database=d", "Server=s;Password=***;***;Database=d"),
            ("host=h password=\"\"Secret= dbname=x", "host=h password=*** dbname=x"),
            ("host=h password=a Secret=b dbname=x", "host=h password=*** *** dbname=x"),
            ("host=h password='a'Secret dbname=x", "host=h password=*** dbname=x"),
            ("host=h password=a;Secret dbname=x", "host=h password=***;***"),
            (
                "postgres://u:p@ss/w?rd@h:5/db?sslmode=require&password=x",
                "postgres://u:***@h:5/db?sslmode=require&password=***",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "Server=db;Database=crm;User Id=sa;Password=p@ss;Encrypt=true",
                "Server=db;Database=crm;User Id=sa;Password=***;Encrypt=true",
            ),
            ("server=db;PWD=x", "server=db;PWD=***"),
            (
                "postgres://mirror:hunter2@127.0.0.1:5432/crm?sslmode=disable",
                "postgres://mirror:***@127.0.0.1:5432/crm?sslmode=disable",
            ),
            ("postgres://127.0.0.1/crm?password=x", "postgres://127.0.0.1/crm?password=***"),
            ("host=db password = 'it\\'s a S3cret' dbname=x", "host=db password =*** dbname=x"),
            ("Password=S3cret", "Password=***"),
            ("sqlite://replica.db", "sqlite://replica.db"),
        ] {
            assert_eq!(connection_string(conn), want, "{conn}");
        }
    }

    #[test]
    fn scrub_hides_the_words_of_hidden_values_anywhere() {
        let conn = "host=db password=First Second99 dbname=x";
        assert_eq!(scrub("invalid option `Second99` near First", conn), "invalid option `***` near ***");
        remember("Server=s;Password={Brace;Secret99}");
        assert_eq!(scrub_known("bad value {Brace;Secret99} here"), "bad value *** here");
        assert_eq!(scrub_known("no secret"), "no secret");
    }
}
