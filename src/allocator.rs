//! The allocator and its settings.
//!
//! sluice allocates through mimalloc. Left at its defaults, mimalloc keeps freed memory
//! committed for a second (`purge_delay` = 1000 ms), commits its 1 GiB arena eagerly and lets
//! the kernel back it with transparent huge pages. A pipeline frees most of what it allocates
//! within milliseconds (a chunk lives from its read to its acknowledgement), so the resident
//! size grew to two or three times the live data: 160–270 MiB for a disk-buffered http sink
//! whose live data stays under 64 MiB.
//!
//! The settings below (measured in `docs/performance.md`, "Memory given back") return freed
//! memory to the OS after 100 ms, commit arena memory as it is used and keep huge pages out:
//! half the resident size at the same throughput. A shorter delay saves a little more memory
//! and costs throughput (10 ms: 10–18% fewer events per second on the http paths).
//! They are defaults: an operator's `MIMALLOC_*` environment variable (for example
//! `MIMALLOC_PURGE_DELAY=1000` for the old behaviour) takes precedence over them.

// The one place sluice needs `unsafe`: mimalloc's settings are reachable only through its
// C API, and must be in place before the first allocation (a link-section constructor).
#![allow(unsafe_code)]

use libmimalloc_sys as mi;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's option numbers (its `mi_option_e`; `libmimalloc-sys` names only v2's).
const ARENA_EAGER_COMMIT: mi::mi_option_t = 4;
const PURGE_DELAY: mi::mi_option_t = 15;
const ALLOW_THP: mi::mi_option_t = 43;

/// (option, value): see the module documentation.
const SETTINGS: [(mi::mi_option_t, std::ffi::c_long); 3] =
    [(PURGE_DELAY, 100), (ARENA_EAGER_COMMIT, 0), (ALLOW_THP, 0)];

/// Runs before `main` and before the first allocation from Rust, once mimalloc read its
/// environment (its own constructor runs first, at priority 101): the arena is reserved on
/// the first allocation, with the eager-commit and huge-page settings of that moment.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static APPLY_SETTINGS: extern "C" fn() = apply_settings;

extern "C" fn apply_settings() {
    for (option, value) in SETTINGS {
        // SAFETY: `mi_option_set_default` writes one entry of mimalloc's option table; it
        // takes any option number below `_mi_option_last` (others are ignored) and leaves an
        // option set from the environment alone. Nothing else runs yet (before `main`).
        unsafe { mi::mi_option_set_default(option, value) };
    }
}

/// Where no `.init_array` is used, the settings apply from `main` (after the arena exists:
/// only the purge delay still takes effect).
pub fn apply() {
    if !cfg!(target_os = "linux") {
        apply_settings();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 3] = ["PURGE_DELAY", "ARENA_EAGER_COMMIT", "ALLOW_THP"];

    fn get(option: mi::mi_option_t) -> std::ffi::c_long {
        // SAFETY: reads one entry of mimalloc's option table.
        unsafe { mi::mi_option_get(option) }
    }

    #[test]
    fn the_settings_apply_before_main_unless_the_environment_sets_them() {
        for ((option, value), name) in SETTINGS.into_iter().zip(NAMES) {
            if std::env::var_os(format!("MIMALLOC_{name}")).is_none() {
                assert_eq!(get(option), value, "{name}");
            }
        }
    }

    /// The option numbers are mimalloc's: `MIMALLOC_<NAME>` set for a child process is what
    /// that child reads at the number used here (a wrong number reads another option).
    #[test]
    fn each_option_number_is_the_one_its_environment_variable_sets() {
        if let Some(option) = std::env::var_os("SLUICE_TEST_MI_OPTION") {
            let option: mi::mi_option_t = option.to_string_lossy().parse().unwrap_or(-1);
            println!("value={}", get(option));
            return;
        }
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("test binary: {e}"));
        for ((option, _), name) in SETTINGS.into_iter().zip(NAMES) {
            let out = std::process::Command::new(&exe)
                .args(["--exact", "allocator::tests::each_option_number_is_the_one_its_environment_variable_sets"])
                .args(["--nocapture", "--test-threads", "1"])
                .env("SLUICE_TEST_MI_OPTION", option.to_string())
                .env(format!("MIMALLOC_{name}"), "77")
                .output()
                .unwrap_or_else(|e| panic!("run the test binary: {e}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("value=77"), "{name} at {option}: {stdout}");
        }
    }
}
