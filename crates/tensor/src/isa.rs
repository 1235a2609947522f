//! Run-time SIMD tier selection.
//!
//! The tier is detected once (first use) and cached in an atomic, so hot
//! paths pay one relaxed load. `FERROLLAMA_ISA=scalar|avx2|avx512|neon` forces a
//! lower tier (for benchmarks and for bisecting numerical differences); a tier
//! the CPU lacks is ignored.

use std::sync::atomic::{AtomicU8, Ordering};

/// A family of kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ + VNNI (plus AVX2/FMA/F16C).
    Avx512Vnni,
    /// aarch64 NEON (f32 helpers only; quantized dots use the scalar path).
    Neon,
}

impl Isa {
    /// Short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512+vnni",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU can run the tier.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                Isa::Avx2.is_available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Isa::Scalar => 1,
            Isa::Avx2 => 2,
            Isa::Avx512Vnni => 3,
            Isa::Neon => 4,
        }
    }

    fn from_u8(v: u8) -> Isa {
        match v {
            2 => Isa::Avx2,
            3 => Isa::Avx512Vnni,
            4 => Isa::Neon,
            _ => Isa::Scalar,
        }
    }
}

/// Every tier this CPU supports, best last (for tests and benchmarks).
pub fn available_isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon]
        .into_iter()
        .filter(|i| i.is_available())
        .collect()
}

static BEST: AtomicU8 = AtomicU8::new(0);

fn detect() -> Isa {
    let best = available_isas().last().copied().unwrap_or(Isa::Scalar);
    let forced = std::env::var("FERROLLAMA_ISA").ok().and_then(|v| {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon]
            .into_iter()
            .find(|i| i.name() == v || (v == "avx512" && *i == Isa::Avx512Vnni))
    });
    match forced {
        Some(f) if f.is_available() => f,
        _ => best,
    }
}

/// The tier all dispatched functions use (detected once, then cached).
#[inline]
pub fn best_isa() -> Isa {
    let v = BEST.load(Ordering::Relaxed);
    if v != 0 {
        return Isa::from_u8(v);
    }
    let isa = detect();
    BEST.store(isa.to_u8(), Ordering::Relaxed);
    isa
}

/// Name of the SIMD tier in use, e.g. "avx512+vnni", "avx2", "neon", "scalar".
pub fn cpu_features() -> &'static str {
    best_isa().name()
}
