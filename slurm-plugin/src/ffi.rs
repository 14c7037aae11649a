//! The SPANK C API, declared by hand for Slurm 22.05 and later (no symbol newer Slurm releases
//! added), and the few safe wrappers the plugin uses. This is the plugin's only unsafe code.
//!
//! Item and context numbers are those of `spank.h` (stable since Slurm 2.x).

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};

/// The opaque SPANK handle.
pub(crate) type Spank = *mut c_void;

/// `struct spank_option`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SpankOption {
    pub(crate) name: *const c_char,
    pub(crate) arginfo: *const c_char,
    pub(crate) usage: *const c_char,
    pub(crate) has_arg: c_int,
    pub(crate) val: c_int,
    pub(crate) cb: Option<unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int>,
}

// SAFETY: the option table only holds pointers to 'static string literals and no callback; it
// is never written after construction.
unsafe impl Sync for SpankOption {}

unsafe extern "C" {
    fn spank_option_register(spank: Spank, option: *const SpankOption) -> c_int;
    fn spank_option_getopt(
        spank: Spank,
        option: *const SpankOption,
        optarg: *mut *mut c_char,
    ) -> c_int;
    fn spank_get_item(spank: Spank, item: c_int, ...) -> c_int;
    fn spank_getenv(spank: Spank, var: *const c_char, buf: *mut c_char, len: c_int) -> c_int;
    fn spank_setenv(
        spank: Spank,
        var: *const c_char,
        val: *const c_char,
        overwrite: c_int,
    ) -> c_int;
    fn spank_context() -> c_int;
    fn slurm_error(format: *const c_char, ...) -> c_int;
    fn slurm_info(format: *const c_char, ...);
}

/// `enum spank_context`.
pub(crate) const S_CTX_REMOTE: c_int = 2;

/// `enum spank_item` values used here.
pub(crate) mod item {
    use std::ffi::c_int;
    pub(crate) const S_JOB_UID: c_int = 0;
    pub(crate) const S_JOB_GID: c_int = 1;
    pub(crate) const S_JOB_ID: c_int = 2;
    pub(crate) const S_JOB_STEPID: c_int = 3;
    pub(crate) const S_JOB_NNODES: c_int = 4;
    pub(crate) const S_JOB_NODEID: c_int = 5;
    pub(crate) const S_JOB_LOCAL_TASK_COUNT: c_int = 6;
    pub(crate) const S_JOB_TOTAL_TASK_COUNT: c_int = 7;
    pub(crate) const S_TASK_GLOBAL_ID: c_int = 12;
    pub(crate) const S_TASK_EXIT_STATUS: c_int = 13;
    pub(crate) const S_JOB_LOCAL_TO_GLOBAL_ID: c_int = 17;
    pub(crate) const S_SLURM_RESTART_COUNT: c_int = 29;
}

/// The context the plugin runs in.
pub(crate) fn context() -> c_int {
    // SAFETY: spank_context takes no arguments and only reads Slurm's global state.
    unsafe { spank_context() }
}

/// Registers an option.
pub(crate) fn register(spank: Spank, option: &'static SpankOption) -> Result<(), String> {
    // SAFETY: `option` points to a 'static, valid `struct spank_option` whose strings are
    // 'static NUL-terminated literals; Slurm copies what it keeps.
    match unsafe { spank_option_register(spank, option) } {
        0 => Ok(()),
        code => Err(format!("spank_option_register failed ({code})")),
    }
}

/// Whether an option was given, and its argument.
pub(crate) fn getopt(spank: Spank, option: &'static SpankOption) -> Option<String> {
    let mut optarg: *mut c_char = std::ptr::null_mut();
    // SAFETY: `option` is the registered 'static option; `optarg` is a valid out-pointer that
    // Slurm sets to a string it owns (or leaves null for options without argument).
    let rc = unsafe { spank_option_getopt(spank, option, &mut optarg) };
    if rc != 0 {
        return None;
    }
    if optarg.is_null() {
        return Some(String::new());
    }
    // SAFETY: non-null optarg points to a NUL-terminated string owned by Slurm for the
    // duration of this call; it is copied at once.
    Some(
        unsafe { CStr::from_ptr(optarg) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// A `uint32_t` item.
pub(crate) fn get_u32(spank: Spank, which: c_int) -> Result<u32, String> {
    let mut value: u32 = 0;
    // SAFETY: every item read through this function is documented in spank.h as taking one
    // `uint32_t *` (or `uid_t *`, also 32 bits), and `value` outlives the call.
    match unsafe { spank_get_item(spank, which, &mut value as *mut u32) } {
        0 => Ok(value),
        code => Err(format!("spank_get_item({which}) failed ({code})")),
    }
}

/// An `int` item.
pub(crate) fn get_i32(spank: Spank, which: c_int) -> Result<i32, String> {
    let mut value: c_int = 0;
    // SAFETY: items read through this function (S_TASK_EXIT_STATUS) take one `int *`, and
    // `value` outlives the call.
    match unsafe { spank_get_item(spank, which, &mut value as *mut c_int) } {
        0 => Ok(value),
        code => Err(format!("spank_get_item({which}) failed ({code})")),
    }
}

/// The global id of local task `local`.
pub(crate) fn local_to_global(spank: Spank, local: u32) -> Result<u32, String> {
    let mut global: u32 = 0;
    // SAFETY: S_JOB_LOCAL_TO_GLOBAL_ID takes a `uint32_t` by value and a `uint32_t *`; both
    // match, and `global` outlives the call.
    match unsafe {
        spank_get_item(
            spank,
            item::S_JOB_LOCAL_TO_GLOBAL_ID,
            local,
            &mut global as *mut u32,
        )
    } {
        0 => Ok(global),
        code => Err(format!("local task {local} has no global id ({code})")),
    }
}

/// A variable of the job's environment.
pub(crate) fn getenv(spank: Spank, name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    let mut buffer = vec![0u8; 65536];
    let len = c_int::try_from(buffer.len()).ok()?;
    // SAFETY: `name` is NUL-terminated; `buffer` is writable for `len` bytes and Slurm writes
    // a NUL-terminated string of at most that size.
    let rc = unsafe { spank_getenv(spank, name.as_ptr(), buffer.as_mut_ptr().cast(), len) };
    if rc != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&buffer[..end]).into_owned())
}

/// Sets a variable in the job's (or task's) environment.
pub(crate) fn setenv(spank: Spank, name: &str, value: &str) -> Result<(), String> {
    let (Ok(c_name), Ok(c_value)) = (CString::new(name), CString::new(value)) else {
        return Err(format!("{name}: value contains a NUL byte"));
    };
    // SAFETY: both strings are NUL-terminated and live across the call; Slurm copies them.
    match unsafe { spank_setenv(spank, c_name.as_ptr(), c_value.as_ptr(), 1) } {
        0 => Ok(()),
        code => Err(format!("spank_setenv({name}) failed ({code})")),
    }
}

fn to_c(message: &str) -> CString {
    CString::new(message.replace('\0', " ")).unwrap_or_default()
}

/// Logs an error through Slurm (srun shows it on stderr for remote errors).
pub(crate) fn error(message: &str) {
    let text = to_c(&format!("cohort: {message}"));
    // SAFETY: the format is a static "%s" and the one argument a NUL-terminated string, as
    // printf requires.
    unsafe {
        slurm_error(c"%s".as_ptr(), text.as_ptr());
    }
}

/// Logs information through Slurm.
pub(crate) fn info(message: &str) {
    let text = to_c(&format!("cohort: {message}"));
    // SAFETY: as in `error`.
    unsafe {
        slurm_info(c"%s".as_ptr(), text.as_ptr());
    }
}

/// Lets the next exec keep `socket` open (clears close-on-exec): the task inherits it.
pub(crate) fn inherit(socket: &impl std::os::fd::AsFd) -> Result<(), String> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(socket, FcntlArg::F_SETFD(FdFlag::empty()))
        .map(drop)
        .map_err(|e| format!("handing the store's socket to rank 0: {e}"))
}

/// Pins the calling process (the task, before it execs) to those of `cpus` it may use, and
/// returns them; an empty result means none of them is available to it (nothing is changed).
pub(crate) fn bind_cpus(cpus: &[usize]) -> Result<Vec<usize>, String> {
    // SAFETY: cpu_set_t is plain data that CPU_ZERO initialises; sched_getaffinity and
    // sched_setaffinity read or write exactly `size_of::<cpu_set_t>()` bytes of it; CPU_ISSET
    // and CPU_SET are only called with indices below CPU_SETSIZE.
    unsafe {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut allowed) != 0 {
            return Err(format!(
                "sched_getaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        let usable: Vec<usize> = cpus
            .iter()
            .copied()
            .filter(|&cpu| cpu < libc::CPU_SETSIZE as usize && libc::CPU_ISSET(cpu, &allowed))
            .collect();
        if usable.is_empty() {
            return Ok(usable);
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in &usable {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, size, &set) != 0 {
            return Err(format!(
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(usable)
    }
}

/// A NUL-terminated string Slurm passes (an option's argument), copied; `None` for null.
pub(crate) fn c_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: Slurm passes option arguments as NUL-terminated strings that live for the call;
    // the bytes are copied at once.
    Some(
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The `argc` strings of a plugstack line Slurm passes in `argv`, copied.
pub(crate) fn strings(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    let n = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return Vec::new();
    }
    (0..n)
        .filter_map(|i| {
            // SAFETY: Slurm passes `argc` valid pointers in `argv`.
            let ptr = unsafe { *argv.add(i) };
            c_string(ptr)
        })
        .collect()
}
