//! Policy files → `Policy`. `read_sources` is the only part that touches the disk (the
//! main file, then its includes); `compile` is pure and collects every problem as a
//! `file:line:col: message` diagnostic.

mod compile;
mod compile_redaction;
mod compile_route;
mod compile_schema;
pub mod diag;
pub mod raw;
pub mod units;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use compile::{compile, version_of};
pub use diag::{Diagnostic, Diagnostics};

use crate::policy::Policy;

/// The largest policy file sitegate reads: a policy is a few kilobytes; anything near
/// this is a mistake (a log file named by accident), not a policy.
pub const MAX_POLICY_FILE: u64 = 4 << 20;

/// One policy file's path and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path as resolved from the main file.
    pub path: PathBuf,
    /// The file's text.
    pub text: String,
    /// A TOML policy file, or a file one of them names.
    pub kind: SourceKind,
}

/// What a policy source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The main file or an included TOML file.
    Policy,
    /// A file a policy file names (a fallback body, ...).
    Data,
    /// An environment variable a policy file names (`secret_env`); its "path" is
    /// `env:NAME`. Never listed or shown.
    Env,
}

impl Source {
    /// A TOML policy file.
    pub fn policy(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Source {
            path: path.into(),
            text: text.into(),
            kind: SourceKind::Policy,
        }
    }
}

/// Reads and compiles the policy rooted at `main`.
pub fn load(main: &Path) -> Result<Policy, Diagnostics> {
    compile(&read_sources(main)?)
}

/// Only the `include` list of the main file; everything else is ignored here and
/// checked by `compile`.
#[derive(Deserialize)]
struct Includes {
    include: Option<Vec<Spanned<String>>>,
}

/// Reads the main file and every file it includes, in order. The set of files is what
/// the reloader watches and hashes.
pub fn read_sources(main: &Path) -> Result<Vec<Source>, Diagnostics> {
    let text = read_policy_file(main).map_err(|d| Diagnostics(vec![d]))?;
    let mut sources = vec![Source::policy(main, text)];
    // A main file that does not parse is reported by `compile` with its position.
    let Ok(includes) = toml::from_str::<Includes>(&sources[0].text) else {
        return Ok(sources);
    };
    let base = main.parent().unwrap_or(Path::new(""));
    let mut diags = Vec::new();
    for inc in includes.include.into_iter().flatten() {
        let path = base.join(inc.get_ref());
        let at = |msg: String| Diagnostic::at(main, &sources[0].text, Some(inc.span()), msg);
        if sources.iter().any(|s| s.path == path) {
            diags.push(at(format!("{} is included twice", path.display())));
            continue;
        }
        match read_policy_file(&path) {
            Ok(text) => sources.push(Source::policy(path, text)),
            Err(d) => diags.push(at(d.message)),
        }
    }
    read_data_files(&mut sources, &mut diags);
    if diags.is_empty() {
        Ok(sources)
    } else {
        Err(Diagnostics(diags))
    }
}

/// The files a policy file names, found without checking anything else (`compile`
/// does that).
#[derive(Deserialize)]
struct Refs {
    #[serde(default)]
    route: Vec<RouteRefs>,
    server: Option<ServerRefs>,
    access: Option<AccessRefs>,
    model_policy: Option<ModelPolicyRefs>,
}

#[derive(Deserialize)]
struct ServerRefs {
    admin_token_file: Option<Spanned<String>>,
    admin_token_env: Option<String>,
}

#[derive(Deserialize)]
struct ModelPolicyRefs {
    registry_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct AccessRefs {
    api_keys_file: Option<Spanned<String>>,
    jwt: Option<JwtRefs>,
}

#[derive(Deserialize)]
struct JwtRefs {
    secret_file: Option<Spanned<String>>,
    public_key_file: Option<Spanned<String>>,
    jwks_file: Option<Spanned<String>>,
    secret_env: Option<String>,
}

#[derive(Deserialize)]
struct RouteRefs {
    fallback: Option<FallbackRefs>,
    schema_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct FallbackRefs {
    file: Option<Spanned<String>>,
}

/// Reads every file the policy files name (fallback bodies, JSON Schemas, key files) as
/// `Data` sources, so
/// they are hashed, watched and reloaded with the policy.
fn read_data_files(sources: &mut Vec<Source>, diags: &mut Vec<Diagnostic>) {
    let mut found = Vec::new();
    let mut found_env: Vec<(PathBuf, String)> = Vec::new();
    for src in sources.iter() {
        let Ok(refs) = toml::from_str::<Refs>(&src.text) else {
            continue;
        };
        let (keys, jwt) = match refs.access {
            Some(a) => (a.api_keys_file, a.jwt),
            None => (None, None),
        };
        let (jwt_files, env) = match jwt {
            Some(j) => (
                [j.secret_file, j.public_key_file, j.jwks_file],
                j.secret_env,
            ),
            None => ([None, None, None], None),
        };
        let (token_file, token_env) = match refs.server {
            Some(s) => (s.admin_token_file, s.admin_token_env),
            None => (None, None),
        };
        for var in env.into_iter().chain(token_env) {
            // The environment is read here, at the edge, like a file.
            let path = PathBuf::from(format!("env:{var}"));
            if let Ok(value) = std::env::var(&var)
                && !found_env.iter().any(|(p, _)| *p == path)
            {
                found_env.push((path, value));
            }
        }
        let registry = refs.model_policy.and_then(|m| m.registry_file);
        let files = refs
            .route
            .into_iter()
            .flat_map(|r| [r.fallback.and_then(|f| f.file), r.schema_file])
            .flatten();
        let files = files.chain(keys).chain(registry).chain(token_file);
        for file in files.chain(jwt_files.into_iter().flatten()) {
            let path = compile_route::resolve(&src.path, file.get_ref());
            if found.iter().all(|(p, _)| *p != path) {
                found.push((
                    path,
                    Diagnostic::at(&src.path, &src.text, Some(file.span()), ""),
                ));
            }
        }
    }
    for (path, text) in found_env {
        sources.push(Source {
            path,
            text,
            kind: SourceKind::Env,
        });
    }
    for (path, at) in found {
        match read_policy_file(&path) {
            Ok(text) => sources.push(Source {
                path,
                text,
                kind: SourceKind::Data,
            }),
            Err(d) => diags.push(Diagnostic {
                message: d.message,
                ..at
            }),
        }
    }
}

/// Reads one policy file, bounded in size, as UTF-8.
pub fn read_policy_file(path: &Path) -> Result<String, Diagnostic> {
    use std::io::Read;
    let fail = |what: String| Diagnostic::file(path, what);
    let file = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_POLICY_FILE {
        return Err(fail(format!(
            "{} is larger than 4 MiB; it is not a policy file",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "{} is not UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    // An empty file is what an in-place save looks like for a moment; applied, an empty
    // routes file would switch every guard off. It is refused, never read as "nothing".
    if text.trim().is_empty() {
        return Err(fail(format!(
            "{} is empty; a policy file, and every file it names, must have content (was it caught mid-save?)",
            path.display()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
