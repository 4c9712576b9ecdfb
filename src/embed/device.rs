//! Where the model embedders run: the CPU, or a GPU with the `cuda` feature.
//!
//! One setting per process, like the precision and the thread count: [`set_device`],
//! `DbOptions::device`, the CLI's `--device`, or the `DUETDB_DEVICE` environment variable
//! (`cpu`, `cuda`, `cuda:N`, `auto`) read on first use. It applies to the embedders loaded
//! after it is set; a database records its embedder, not the device (the vectors of the
//! two differ only by rounding: `benches/gpu_check.sh` measures by how much).

use crate::error::{Error, Result};
use candle_core::Device;
use std::sync::Mutex;

/// Which device the model embedders load onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU (the default without the `cuda` feature).
    Cpu,
    /// CUDA GPU number N; an error where the binary lacks the `cuda` feature or the GPU.
    Cuda(usize),
    /// GPU 0 where the `cuda` feature and a GPU are there, else the CPU (the default
    /// with the feature).
    Auto,
}

/// The choice when neither [`set_device`] nor `DUETDB_DEVICE` says otherwise.
pub const DEFAULT_DEVICE: DeviceChoice = if cfg!(feature = "cuda") { DeviceChoice::Auto } else { DeviceChoice::Cpu };

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) if n < 64 => Ok(DeviceChoice::Cuda(n)),
                _ => Err(Error::invalid(format!("device `{s}`: expected cpu, cuda, cuda:N (N < 64) or auto"))),
            },
        }
    }
}

static CHOSEN: Mutex<Option<DeviceChoice>> = Mutex::new(None);

/// Sets the device of the model embedders this process loads from now on.
///
/// ```
/// use duetdb::embed::{device_choice, set_device, DeviceChoice};
/// set_device(DeviceChoice::Cpu);
/// assert_eq!(device_choice(), DeviceChoice::Cpu);
/// assert!("cuda:1".parse::<DeviceChoice>().is_ok() && "gpu".parse::<DeviceChoice>().is_err());
/// ```
pub fn set_device(d: DeviceChoice) {
    *CHOSEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
}

/// The choice in force: set, or from `DUETDB_DEVICE`, or [`DEFAULT_DEVICE`]. An
/// unreadable `DUETDB_DEVICE` is logged and ignored.
pub fn device_choice() -> DeviceChoice {
    let mut c = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    *c.get_or_insert_with(|| match std::env::var("DUETDB_DEVICE") {
        Ok(v) => v.parse().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring DUETDB_DEVICE");
            DEFAULT_DEVICE
        }),
        Err(_) => DEFAULT_DEVICE,
    })
}

/// The device the choice in force names: an error for a GPU this binary or machine
/// cannot use (never a silent fallback when one was asked for by name).
pub fn device() -> Result<Device> {
    match device_choice() {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => cuda(n),
        DeviceChoice::Auto => Ok(cuda(0).unwrap_or(Device::Cpu)),
    }
}

#[cfg(feature = "cuda")]
fn cuda(n: usize) -> Result<Device> {
    Device::new_cuda(n).map_err(|e| Error::model(format!("CUDA device {n} is not usable: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: usize) -> Result<Device> {
    Err(Error::invalid(format!("device cuda:{n}: this build has no GPU support (build with `--features cuda`, see scripts/build-cuda.sh)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_a_missing_gpu_is_an_error() {
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(3));
        for bad in ["", "CUDA", "cuda:", "cuda:x", "cuda:99", "metal"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains("expected cpu, cuda"), "{e}");
        }
        #[cfg(not(feature = "cuda"))]
        assert!(cuda(0).unwrap_err().to_string().contains("--features cuda"));
    }
}
