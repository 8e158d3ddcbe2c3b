//! The model-lock policy: which model versions may serve inference, and when
//! retraining, registering and unlocking are allowed. Pure: the decision is a function
//! of the table and the request's facts.

use crate::error::{ErrorCode, Rejection};

/// One registered model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    /// Model name.
    pub name: String,
    /// Version string (compared numerically part by part: 2.10.0 > 2.9.1).
    pub version: String,
    /// Locked versions serve inference and are never overwritten.
    pub locked: bool,
    /// Inference allowed for this version.
    pub inference: bool,
    /// Retraining allowed for this model.
    pub retrain: bool,
}

/// `[model_policy]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPolicy {
    /// Inference only on locked versions.
    pub require_locked_for_inference: bool,
    /// Retraining needs the force flag, literally `true`.
    pub retrain_requires_force: bool,
    /// Unlocking through the API is possible at all (with a confirmation header).
    pub api_unlock: bool,
}

impl Default for ModelPolicy {
    fn default() -> Self {
        ModelPolicy {
            require_locked_for_inference: true,
            retrain_requires_force: true,
            api_unlock: false,
        }
    }
}

/// What a route does to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run a prediction.
    Inference,
    /// Retrain the model.
    Retrain,
    /// Register (or overwrite) a version.
    Register,
    /// Unlock a version.
    Unlock,
}

impl Action {
    /// Parses an action name from a policy file.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "inference" => Action::Inference,
            "retrain" => Action::Retrain,
            "register" => Action::Register,
            "unlock" => Action::Unlock,
            _ => return None,
        })
    }

    /// The stable name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Inference => "inference",
            Action::Retrain => "retrain",
            Action::Register => "register",
            Action::Unlock => "unlock",
        }
    }
}

/// What a request says about the model it touches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelFacts {
    /// The model name, when the request carries one.
    pub name: Option<String>,
    /// The version, when the request carries one.
    pub version: Option<String>,
    /// The force flag as sent (only JSON `true` counts).
    pub force: Option<serde_json::Value>,
    /// The unlock confirmation as sent.
    pub confirm: Option<String>,
}

/// An allowed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The version chosen for an inference that named none (sent upstream).
    pub chosen_version: Option<String>,
    /// The version the decision was about, for logs and metrics.
    pub version: Option<String>,
}

/// The registered models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelTable {
    versions: Vec<ModelVersion>,
}

fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split(['.', '-', '+'])
        .map(|p| (p.parse::<u64>().unwrap_or(0), p.to_string()))
        .collect()
}

impl ModelTable {
    /// A table of `versions` (checked for duplicates by the compiler).
    pub fn new(versions: Vec<ModelVersion>) -> Self {
        ModelTable { versions }
    }

    /// Adds `v` unless that name and version is listed; returns the entry already
    /// there when it says something else about the version.
    pub fn add_under(&mut self, v: ModelVersion) -> Option<&ModelVersion> {
        match self
            .versions
            .iter()
            .position(|x| x.name == v.name && x.version == v.version)
        {
            Some(i) if self.versions[i] != v => Some(&self.versions[i]),
            Some(_) => None,
            None => {
                self.versions.push(v);
                None
            }
        }
    }

    /// Every version, in policy order.
    pub fn versions(&self) -> &[ModelVersion] {
        &self.versions
    }

    fn of(&self, name: &str) -> impl Iterator<Item = &ModelVersion> {
        self.versions.iter().filter(move |v| v.name == name)
    }

    /// True when `name` has at least one version.
    pub fn knows(&self, name: &str) -> bool {
        self.of(name).next().is_some()
    }

    /// Decides a request; a denial is the rejection to answer with.
    pub fn decide(
        &self,
        policy: &ModelPolicy,
        action: Action,
        facts: &ModelFacts,
    ) -> Result<Allowed, Rejection> {
        let Some(name) = facts.name.as_deref() else {
            return Err(Rejection::new(
                ErrorCode::InvalidRequest,
                "the request names no model",
            ));
        };
        if !self.knows(name) {
            return Err(Rejection::new(
                ErrorCode::ModelUnknown,
                format!("model `{name}` is not registered"),
            ));
        }
        let named = facts
            .version
            .as_deref()
            .map(|v| self.of(name).find(|m| m.version == v).ok_or(v));
        match action {
            Action::Inference => {
                let model = match named {
                    Some(Ok(m)) => m,
                    Some(Err(v)) => {
                        return Err(Rejection::new(
                            ErrorCode::ModelUnknown,
                            format!("version {v} of model `{name}` is not registered"),
                        ));
                    }
                    None => {
                        // The latest locked version (or the latest at all when locking is
                        // not required).
                        let best = self
                            .of(name)
                            .filter(|m| m.locked || !policy.require_locked_for_inference)
                            .max_by(|a, b| version_key(&a.version).cmp(&version_key(&b.version)));
                        match best {
                            Some(m) => m,
                            None => {
                                return Err(Rejection::new(
                                    ErrorCode::ModelNotLocked,
                                    format!("model `{name}` has no locked version to serve"),
                                ));
                            }
                        }
                    }
                };
                if policy.require_locked_for_inference && !model.locked {
                    return Err(Rejection::new(
                        ErrorCode::ModelNotLocked,
                        format!("version {} of model `{name}` is not locked", model.version),
                    ));
                }
                if !model.inference {
                    return Err(Rejection::new(
                        ErrorCode::ModelInferenceDisabled,
                        format!(
                            "inference is disabled for version {} of model `{name}`",
                            model.version
                        ),
                    ));
                }
                Ok(Allowed {
                    chosen_version: facts.version.is_none().then(|| model.version.clone()),
                    version: Some(model.version.clone()),
                })
            }
            Action::Retrain => {
                if self.of(name).any(|m| !m.retrain) {
                    return Err(Rejection::new(
                        ErrorCode::Forbidden,
                        format!("retraining model `{name}` is not allowed by the model policy"),
                    ));
                }
                if policy.retrain_requires_force
                    && facts.force != Some(serde_json::Value::Bool(true))
                {
                    return Err(Rejection::new(
                        ErrorCode::RetrainNotConfirmed,
                        "retraining needs the force flag set to true (the JSON boolean)",
                    ));
                }
                Ok(Allowed {
                    chosen_version: None,
                    version: facts.version.clone(),
                })
            }
            Action::Register => match named {
                Some(Ok(m)) if m.locked => Err(Rejection::new(
                    ErrorCode::ModelLocked,
                    format!(
                        "version {} of model `{name}` is locked and cannot be overwritten",
                        m.version
                    ),
                )),
                None => Err(Rejection::new(
                    ErrorCode::InvalidRequest,
                    "registering needs a version",
                )),
                _ => Ok(Allowed {
                    chosen_version: None,
                    version: facts.version.clone(),
                }),
            },
            Action::Unlock => {
                let Some(version) = facts.version.as_deref() else {
                    return Err(Rejection::new(
                        ErrorCode::InvalidRequest,
                        "unlocking needs a version",
                    ));
                };
                if !policy.api_unlock {
                    return Err(Rejection::new(
                        ErrorCode::Forbidden,
                        "unlocking through the API is disabled; edit models.toml instead",
                    ));
                }
                let expected = format!("{name}@{version}");
                if facts.confirm.as_deref() != Some(expected.as_str()) {
                    return Err(Rejection::new(
                        ErrorCode::Forbidden,
                        format!("unlocking needs the header X-Confirm-Unlock: {expected}"),
                    ));
                }
                Ok(Allowed {
                    chosen_version: None,
                    version: Some(version.to_string()),
                })
            }
        }
    }

    /// `(name, version, was locked, is locked)` for every version whose lock changed
    /// from `self` to `next` (added and removed versions included), for the audit log.
    pub fn lock_changes(
        &self,
        next: &ModelTable,
    ) -> Vec<(String, String, Option<bool>, Option<bool>)> {
        let mut out = Vec::new();
        let find = |t: &ModelTable, m: &ModelVersion| {
            t.versions
                .iter()
                .find(|x| x.name == m.name && x.version == m.version)
                .map(|x| x.locked)
        };
        for m in &self.versions {
            let after = find(next, m);
            if after != Some(m.locked) {
                out.push((m.name.clone(), m.version.clone(), Some(m.locked), after));
            }
        }
        for m in &next.versions {
            if find(self, m).is_none() {
                out.push((m.name.clone(), m.version.clone(), None, Some(m.locked)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
