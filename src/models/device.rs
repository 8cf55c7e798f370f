//! `--device auto|cpu|cuda:N`: which candle device networks run on.
//!
//! The CUDA backend exists only in builds with the cargo feature `cuda`
//! (candle `cuda` + `cudnn`); CI builds without it, so every path here must
//! work and say something useful on a CPU-only build.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// What the user asked for, before any device is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when this build has CUDA support and a device answers, else the CPU.
    Auto,
    Cpu,
    /// CUDA device with this ordinal.
    Cuda(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("device `{0}`: expected auto, cpu or cuda:N (N = GPU ordinal, e.g. cuda:0)")]
    Syntax(String),
    #[error("{0} requested but this build has no CUDA support (build with --features cuda)")]
    NoCudaSupport(DeviceSpec),
    #[error("{spec} requested but it could not be opened: {reason}")]
    Open { spec: DeviceSpec, reason: String },
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            // `cuda` alone means the first GPU, as in PyTorch
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match t.strip_prefix("cuda:") {
                Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    n.parse().map(DeviceSpec::Cuda).map_err(|_| DeviceError::Syntax(s.to_string()))
                }
                _ => Err(DeviceError::Syntax(s.to_string())),
            },
        }
    }
}

/// True when this binary was built with the `cuda` feature.
pub const fn built_with_cuda() -> bool {
    cfg!(feature = "cuda")
}

impl DeviceSpec {
    /// Opens the device. `Auto` never fails: without CUDA (in the build or on
    /// the machine) it falls back to the CPU and says so in the log.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(_) if !built_with_cuda() => Err(DeviceError::NoCudaSupport(self)),
            DeviceSpec::Cuda(n) => Device::new_cuda(n).map_err(|e| DeviceError::Open { spec: self, reason: e.to_string() }),
            DeviceSpec::Auto if !built_with_cuda() => Ok(Device::Cpu),
            DeviceSpec::Auto => match Device::new_cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    tracing::info!("--device auto: no usable CUDA device ({e}); running on the CPU");
                    Ok(Device::Cpu)
                }
            },
        }
    }
}

/// Parses and opens `--device` in one step.
pub fn parse_device(s: &str) -> Result<Device, DeviceError> {
    s.parse::<DeviceSpec>()?.open()
}

/// Short name of an opened device for logs and run records.
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("auto".parse::<DeviceSpec>(), Ok(DeviceSpec::Auto));
        assert_eq!("CPU".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!(" cuda:0 ".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:12".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(12)));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        for spec in [DeviceSpec::Auto, DeviceSpec::Cpu, DeviceSpec::Cuda(3)] {
            assert_eq!(spec.to_string().parse::<DeviceSpec>(), Ok(spec));
        }
    }

    #[test]
    fn rejects_malformed_specs_with_the_input_in_the_message() {
        for bad in ["", "cuda:", "cuda:x", "cuda:-1", "cuda:1.5", "tpu", "cpu:0", "cuda:+1"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert_eq!(e, DeviceError::Syntax(bad.to_string()), "{bad}");
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn cpu_and_auto_always_open() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let auto = parse_device("auto").unwrap();
        if !built_with_cuda() {
            assert!(auto.is_cpu());
        }
        assert_eq!(device_name(&Device::Cpu), "cpu");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_on_a_cpu_build_says_how_to_get_it() {
        let e = parse_device("cuda:1").unwrap_err();
        assert_eq!(e, DeviceError::NoCudaSupport(DeviceSpec::Cuda(1)));
        assert_eq!(e.to_string(), "cuda:1 requested but this build has no CUDA support (build with --features cuda)");
    }
}
