//! The run directory on disk: the run's settings, and its numbered states named by
//! `train/latest` (see the module documentation of [`crate::train`]).

use super::*;

/// The run's settings, its newest complete state's directory (named by `train/latest`)
/// and that state's step.
pub(super) fn latest_state(out: &Path) -> Result<(TrainConfig, PathBuf, u64)> {
    let path = out.join("train").join("config.json");
    let raw = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: TrainConfig = serde_json::from_slice(&raw).map_err(|e| Error::corrupt_from(&path, "invalid JSON", e))?;
    let latest = out.join("train").join("latest");
    let name = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
    let dir = out.join("train").join(name.trim());
    let sp = dir.join("state.json");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sp).map_err(|e| Error::io(&sp, e))?).map_err(|e| Error::corrupt_from(&sp, "invalid JSON", e))?;
    let step = state["step"].as_u64().ok_or_else(|| Error::corrupt(&sp, "no `step`"))?;
    Ok((cfg, dir, step))
}

/// Where a run's numbered state lives, by step.
pub(super) fn state_dir(out: &Path, step: u64) -> PathBuf {
    out.join("train").join(format!("step-{step:07}"))
}
