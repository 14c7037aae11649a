//! Reads `SLURM_VERSION_NUMBER` from the installed `slurm_version.h` (Slurm refuses a plugin
//! built for another major.minor). `COHORT_SLURM_VERSION=0x160508` overrides it;
//! `SLURM_INCLUDE_DIR` points at another installation's headers.

fn main() {
    println!("cargo:rerun-if-env-changed=COHORT_SLURM_VERSION");
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    let version = match std::env::var("COHORT_SLURM_VERSION") {
        Ok(text) => text,
        Err(_) => {
            let dir = std::env::var("SLURM_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include".into());
            let header = std::path::Path::new(&dir).join("slurm/slurm_version.h");
            println!("cargo:rerun-if-changed={}", header.display());
            let text = match std::fs::read_to_string(&header) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!(
                        "error: {}: {e}; install libslurm-dev, or set SLURM_INCLUDE_DIR or COHORT_SLURM_VERSION",
                        header.display()
                    );
                    std::process::exit(1);
                }
            };
            match text.lines().find_map(|line| {
                line.strip_prefix("#define SLURM_VERSION_NUMBER")
                    .map(|v| v.trim().to_owned())
            }) {
                Some(version) => version,
                None => {
                    eprintln!("error: {} has no SLURM_VERSION_NUMBER", header.display());
                    std::process::exit(1);
                }
            }
        }
    };
    let parsed = version.strip_prefix("0x").map_or_else(
        || version.parse::<u32>().ok(),
        |hex| u32::from_str_radix(hex, 16).ok(),
    );
    let Some(number) = parsed else {
        eprintln!("error: Slurm version {version:?} is not a number like 0x160508");
        std::process::exit(1);
    };
    println!("cargo:rustc-env=COHORT_SLURM_VERSION_NUMBER={number}");
}
