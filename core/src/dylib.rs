//! Providers loaded from shared libraries (`kind = "dylib"`, `path = "..."`).
//!
//! The library must export the SDK's versioned entry symbol and table
//! ([`authnz_plugin::abi`]). Loading checks everything it can before trusting the library:
//! the file and every directory above it (owned by root or authnz's user, writable by nobody
//! else: SECURITY H69), loaded through the descriptor that was checked, the symbol, the ABI
//! version, the table size and the SDK's major version. Each is refused with an error that
//! names the file and the reason, never a crash. Libraries are never unloaded (their code may be
//! running on another thread), and every call goes through the table, whose plugin side catches
//! panics: a provider that panics fails that login with 502 and keeps serving the others.
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};

use authnz_plugin::abi::{
    NewRequest, PluginBuffer, PluginTableV1, ABI_VERSION, ENTRY_SYMBOL, OP_AUTHORIZE_PARAMS,
    OP_DESCRIBE, OP_MAP_IDENTITY, STATUS_OK, STATUS_PANIC,
};
use authnz_plugin::{
    ConfigError, IdentityProvider, LoginContext, MapError, MappedIdentity, ProviderInfo,
    ProviderSettings, VerifiedClaims,
};

/// A provider behind a loaded library's table.
pub struct DylibProvider {
    table: &'static PluginTableV1,
    handle: *mut c_void,
    info: ProviderInfo,
    path: PathBuf,
    sdk_version: String,
}

// SAFETY: the ABI requires providers to be `Send + Sync` (the SDK trait bound), and the handle
// is only used through the table's functions.
unsafe impl Send for DylibProvider {}
// SAFETY: as above.
unsafe impl Sync for DylibProvider {}

impl std::fmt::Debug for DylibProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DylibProvider")
            .field("path", &self.path)
            .field("kind", &self.info.kind)
            .field("sdk_version", &self.sdk_version)
            .finish()
    }
}

impl Drop for DylibProvider {
    fn drop(&mut self) {
        // SAFETY: `handle` came from this table's `new` and is dropped once.
        unsafe { (self.table.drop)(self.handle) };
    }
}

fn path_error(message: impl Into<String>) -> Vec<ConfigError> {
    vec![ConfigError::new("path", message)]
}

/// Loads the library at `path` and builds its provider from `settings`.
pub fn load(path: &Path, settings: &ProviderSettings) -> Result<DylibProvider, Vec<ConfigError>> {
    let shown = path.display().to_string();
    let library = open_checked(path).map_err(|reason| path_error(format!("{shown}: {reason}")))?;
    // Never unloaded: a provider's code may still run elsewhere.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol's type is fixed by the SDK's ABI version 1.
    let entry = unsafe { library.get::<extern "C" fn() -> *const PluginTableV1>(ENTRY_SYMBOL) }
        .map_err(|_| {
            path_error(format!(
                "{shown}: not an authnz provider (it does not export authnz_plugin_v1)"
            ))
        })?;
    let table_ptr = entry();
    if table_ptr.is_null() {
        return Err(path_error(format!(
            "{shown}: authnz_plugin_v1 returned no table"
        )));
    }
    // SAFETY: the library promises a static table; only its first two fields are read before
    // the version and size are checked.
    let table: &'static PluginTableV1 = unsafe { &*table_ptr };
    let sdk_version =
        check_table(table).map_err(|reason| path_error(format!("{shown}: {reason}")))?;
    from_table(table, path, sdk_version, settings)
}

/// Checks the ABI version, the table size and the SDK's major version; returns the SDK version.
pub fn check_table(table: &PluginTableV1) -> Result<String, String> {
    if table.abi_version != ABI_VERSION {
        return Err(format!(
            "provider ABI version {} is not supported (this authnz speaks version {ABI_VERSION}); rebuild it against authnz-plugin {}",
            table.abi_version,
            env!("CARGO_PKG_VERSION")
        ));
    }
    if (table.struct_size as usize) < std::mem::size_of::<PluginTableV1>() {
        return Err(format!(
            "provider table is {} bytes, smaller than the {} of ABI version {ABI_VERSION}",
            table.struct_size,
            std::mem::size_of::<PluginTableV1>()
        ));
    }
    let version = c_string(table.sdk_version).ok_or("provider has no SDK version")?;
    let major = |version: &str| version.split('.').next().unwrap_or_default().to_string();
    let ours = authnz_plugin::abi::SDK_VERSION_C.trim_end_matches('\0');
    // 0.x SDKs are compatible within a minor version, as Cargo's rules say.
    let compatible = |version: &str| {
        let parts: Vec<&str> = version.split('.').collect();
        if major(version) == "0" {
            parts.get(..2) == ours.split('.').collect::<Vec<_>>().get(..2)
        } else {
            major(version) == major(ours)
        }
    };
    if !compatible(&version) {
        return Err(format!(
            "provider was built with authnz-plugin {version}, which is not compatible with {ours}"
        ));
    }
    Ok(version)
}

fn c_string(ptr: *const std::ffi::c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the table promises static NUL-terminated strings.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().ok().map(str::to_string)
}

/// Builds the provider through a checked table (also used by tests on in-process tables).
pub fn from_table(
    table: &'static PluginTableV1,
    path: &Path,
    sdk_version: String,
    settings: &ProviderSettings,
) -> Result<DylibProvider, Vec<ConfigError>> {
    let shown = path.display().to_string();
    let request = serde_json::to_vec(&NewRequest {
        name: settings.name.clone(),
        settings: settings.settings.clone(),
    })
    .map_err(|err| path_error(format!("{shown}: {err}")))?;
    let mut out = PluginBuffer::empty();
    let mut status = STATUS_OK;
    // SAFETY: valid pointers for the duration of the call, as the ABI requires.
    let handle = unsafe { (table.new)(request.as_ptr(), request.len(), &mut out, &mut status) };
    let answer = take(table, out);
    if handle.is_null() {
        return Err(match status {
            STATUS_PANIC => path_error(format!(
                "{shown}: the provider panicked while reading its settings: {}",
                String::from_utf8_lossy(&answer)
            )),
            _ => serde_json::from_slice::<Vec<ConfigError>>(&answer).unwrap_or_else(|_| {
                path_error(format!("{shown}: the provider refused its settings"))
            }),
        });
    }
    let mut provider = DylibProvider {
        table,
        handle,
        info: ProviderInfo::default(),
        path: path.to_path_buf(),
        sdk_version,
    };
    provider.info = provider
        .call::<ProviderInfo>(OP_DESCRIBE, b"null")
        .map_err(|reason| path_error(format!("{shown}: describe failed: {reason}")))?;
    if provider.info.kind.is_empty() {
        provider.info.kind = c_string(table.kind).unwrap_or_default();
    }
    Ok(provider)
}

/// Copies a plugin buffer and gives it back to the plugin.
fn take(table: &PluginTableV1, buffer: PluginBuffer) -> Vec<u8> {
    if buffer.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the plugin handed us `len` readable bytes, which we copy before freeing.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec();
    // SAFETY: the buffer came from this plugin and is freed once.
    unsafe { (table.free)(buffer) };
    bytes
}

/// Opens the library, checks it, and loads what was checked (SECURITY H69). The file and every
/// directory above it (after resolving symlinks) must be owned by root or by the user authnz
/// runs as and be writable by nobody else (no group or world write, sticky or not: `/tmp` is
/// refused). On Linux the library is then loaded through its open descriptor
/// (`/proc/self/fd/<n>`), so a file swapped in after the check is never the one that runs; the
/// descriptor stays open for the life of the process (a reused number would name another file).
fn open_checked(path: &Path) -> Result<libloading::Library, String> {
    let real = std::fs::canonicalize(path).map_err(|err| format!("cannot read: {err}"))?;
    let file = std::fs::File::open(&real).map_err(|err| format!("cannot read: {err}"))?;
    let held = file
        .metadata()
        .map_err(|err| format!("cannot read: {err}"))?;
    if !held.is_file() {
        return Err("not a file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let euid = effective_uid()?;
        let trusted = |what: &str, shown: &Path, metadata: &std::fs::Metadata| {
            if metadata.uid() != 0 && metadata.uid() != euid {
                return Err(format!(
                    "refused: {what} {} belongs to uid {}, not to root or to the user authnz runs as (uid {euid})",
                    shown.display(),
                    metadata.uid()
                ));
            }
            match metadata.mode() {
                mode if mode & 0o002 != 0 => Err(format!(
                    "refused: {what} {} is writable by every user",
                    shown.display()
                )),
                mode if mode & 0o020 != 0 => Err(format!(
                    "refused: {what} {} is writable by its group",
                    shown.display()
                )),
                _ => Ok(()),
            }
        };
        trusted("the library", &real, &held)?;
        for dir in real.ancestors().skip(1) {
            let metadata = std::fs::metadata(dir)
                .map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
            trusted("its directory", dir, &metadata)?;
        }
        let again = std::fs::metadata(&real).map_err(|err| format!("cannot read: {err}"))?;
        if (again.dev(), again.ino()) != (held.dev(), held.ino()) {
            return Err("refused: the file was replaced while it was checked".into());
        }
    }
    load_open(file, &real)
}

/// Loads the checked, open file: through its descriptor on Linux.
#[cfg(target_os = "linux")]
fn load_open(file: std::fs::File, real: &Path) -> Result<libloading::Library, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let via = format!("/proc/self/fd/{}", file.as_raw_fd());
    let held = file
        .metadata()
        .map_err(|err| format!("cannot read: {err}"))?;
    match std::fs::metadata(&via) {
        Ok(seen) if (seen.dev(), seen.ino()) == (held.dev(), held.ino()) => {}
        _ => {
            return Err(format!(
                "refused: cannot load {} through its descriptor (is /proc mounted?)",
                real.display()
            ))
        }
    }
    // SAFETY: loading runs the library's initialisers; this is the inode checked above, an
    // admin-controlled file, which is the trust boundary for provider code. RTLD_NOW: a missing
    // symbol fails here, with the file's name, not in the middle of a login.
    let library = unsafe {
        libloading::os::unix::Library::open(
            Some(&via),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map_err(|err| format!("cannot load: {err}"))?;
    // Kept open for good: the loader knows the library by this descriptor's path.
    std::mem::forget(file);
    Ok(library.into())
}

/// Loads the checked file by its resolved path (no descriptor loading off Linux).
#[cfg(not(target_os = "linux"))]
fn load_open(file: std::fs::File, real: &Path) -> Result<libloading::Library, String> {
    drop(file);
    // SAFETY: as on Linux; the whole tree up to the file was checked just now.
    unsafe { libloading::Library::new(real) }.map_err(|err| format!("cannot load: {err}"))
}

/// The effective user id, from `/proc/self/status` (std has no `geteuid`).
#[cfg(unix)]
pub fn effective_uid() -> Result<u32, String> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|err| format!("cannot read /proc/self/status: {err}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1)?.parse().ok())
            .ok_or_else(|| "no effective uid in /proc/self/status".to_string())
    }
    #[cfg(not(target_os = "linux"))]
    {
        use std::os::unix::fs::MetadataExt;
        // The owner of a file this process creates is its effective uid.
        let probe = std::env::temp_dir().join(format!("authnz-uid-{}", std::process::id()));
        let uid = std::fs::File::create(&probe)
            .and_then(|file| file.metadata())
            .map(|metadata| metadata.uid())
            .map_err(|err| format!("cannot tell the effective uid: {err}"));
        let _ = std::fs::remove_file(&probe);
        uid
    }
}

impl DylibProvider {
    /// Where the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SDK version the library was built with.
    pub fn sdk_version(&self) -> &str {
        &self.sdk_version
    }

    fn call<T: serde::de::DeserializeOwned>(&self, op: u32, input: &[u8]) -> Result<T, String> {
        let mut out = PluginBuffer::empty();
        // SAFETY: valid pointers for the duration of the call; `handle` is alive.
        let status =
            unsafe { (self.table.call)(self.handle, op, input.as_ptr(), input.len(), &mut out) };
        let answer = take(self.table, out);
        match status {
            STATUS_OK => {
                serde_json::from_slice(&answer).map_err(|err| format!("unreadable answer: {err}"))
            }
            STATUS_PANIC => Err(format!("panicked: {}", String::from_utf8_lossy(&answer))),
            _ => Err(String::from_utf8_lossy(&answer).into_owned()),
        }
    }
}

impl IdentityProvider for DylibProvider {
    fn describe(&self) -> ProviderInfo {
        self.info.clone()
    }

    fn authorize_params(&self, ctx: &LoginContext) -> Vec<(String, String)> {
        self.try_authorize_params(ctx).unwrap_or_default()
    }

    fn try_authorize_params(&self, ctx: &LoginContext) -> Result<Vec<(String, String)>, String> {
        let input = serde_json::to_vec(ctx).map_err(|err| err.to_string())?;
        self.call(OP_AUTHORIZE_PARAMS, &input).inspect_err(|reason| {
            tracing::error!(library = %self.path.display(), %reason, "provider authorize_params failed");
        })
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        let input = serde_json::to_vec(claims).map_err(|err| MapError::Failed(err.to_string()))?;
        match self.call::<Result<MappedIdentity, MapError>>(OP_MAP_IDENTITY, &input) {
            Ok(result) => result,
            Err(reason) => {
                tracing::error!(library = %self.path.display(), %reason, "provider map_identity failed");
                Err(MapError::Failed(
                    "the identity provider plugin failed".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authnz_plugin::abi::{plugin_call, plugin_drop, plugin_free};

    unsafe extern "C" fn never_new(
        _: *const u8,
        _: usize,
        _: *mut PluginBuffer,
        _: *mut u32,
    ) -> *mut c_void {
        std::ptr::null_mut()
    }

    fn table(abi_version: u32, struct_size: u32, sdk: &'static str) -> PluginTableV1 {
        PluginTableV1 {
            abi_version,
            struct_size,
            sdk_version: sdk.as_ptr().cast(),
            kind: c"test".as_ptr(),
            new: never_new,
            call: plugin_call,
            free: plugin_free,
            drop: plugin_drop,
        }
    }

    #[test]
    fn mismatched_tables_are_refused_with_the_reason() {
        let size = std::mem::size_of::<PluginTableV1>() as u32;
        let ours = authnz_plugin::abi::SDK_VERSION_C;
        assert!(check_table(&table(ABI_VERSION, size, ours)).is_ok());
        let cases = [
            (
                table(ABI_VERSION + 1, size, ours),
                "ABI version 2 is not supported",
            ),
            (table(0, size, ours), "ABI version 0 is not supported"),
            (table(ABI_VERSION, size - 8, ours), "smaller than"),
            (table(ABI_VERSION, size, "99.0.0\0"), "not compatible"),
            (table(ABI_VERSION, size, "0.999.0\0"), "not compatible"),
        ];
        for (table, reason) in cases {
            let error = check_table(&table).err().unwrap_or_default();
            assert!(error.contains(reason), "{error:?} lacks {reason:?}");
        }
    }
}
