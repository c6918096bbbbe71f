//! The stable C ABI of dynamically loaded providers.
//!
//! A provider library exports one symbol, [`ENTRY_SYMBOL`] (`authnz_plugin_v1`), returning a
//! pointer to a static [`PluginTableV1`]. JSON crosses the boundary in both directions; each side
//! frees only the memory it allocated (the host hands results back through `free`); every call
//! into the provider is wrapped in `catch_unwind`, so a panic becomes an error status instead of
//! unwinding across the boundary. The host never unloads a library.
//!
//! Plugin authors do not touch any of this: [`export_provider!`](crate::export_provider) writes
//! it for them.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::{
    ConfigError, Factory, IdentityProvider, LoginContext, MapError, MappedIdentity,
    ProviderSettings, TomlTable, VerifiedClaims,
};

/// The ABI version of this SDK. A host refuses a table with another version.
pub const ABI_VERSION: u32 = 1;
/// The exported symbol (NUL-terminated, for `dlsym`).
pub const ENTRY_SYMBOL: &[u8] = b"authnz_plugin_v1\0";
/// This SDK's version, NUL-terminated.
pub const SDK_VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// `call` operations.
pub const OP_DESCRIBE: u32 = 1;
pub const OP_AUTHORIZE_PARAMS: u32 = 2;
pub const OP_MAP_IDENTITY: u32 = 3;

/// `call` and `new` statuses.
pub const STATUS_OK: u32 = 0;
/// The answer is an error, as JSON.
pub const STATUS_ERROR: u32 = 1;
/// The provider panicked; the answer is the panic message.
pub const STATUS_PANIC: u32 = 2;

/// Bytes allocated by the plugin and handed to the host, which gives them back through `free`.
#[repr(C)]
pub struct PluginBuffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl PluginBuffer {
    /// An empty buffer (nothing to free).
    pub const fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Self {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    }
}

/// The function table a provider library exports (version 1).
#[repr(C)]
pub struct PluginTableV1 {
    /// Must equal the host's [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<PluginTableV1>()` in the plugin; the host refuses a smaller table.
    pub struct_size: u32,
    /// The SDK version the plugin was built with (static, NUL-terminated).
    pub sdk_version: *const c_char,
    /// The provider kind (static, NUL-terminated).
    pub kind: *const c_char,
    /// Builds a provider from settings JSON. Returns the handle, or null with an error list
    /// (JSON `[{"key", "message"}]`) or a panic message in `out` and the status in `status`.
    pub new: unsafe extern "C" fn(
        settings: *const u8,
        settings_len: usize,
        out: *mut PluginBuffer,
        status: *mut u32,
    ) -> *mut c_void,
    /// Runs one operation with JSON input; the JSON answer is in `out`. Returns a status.
    pub call: unsafe extern "C" fn(
        handle: *mut c_void,
        op: u32,
        input: *const u8,
        input_len: usize,
        out: *mut PluginBuffer,
    ) -> u32,
    /// Frees a buffer this plugin allocated.
    pub free: unsafe extern "C" fn(buffer: PluginBuffer),
    /// Drops a provider handle.
    pub drop: unsafe extern "C" fn(handle: *mut c_void),
}

// SAFETY: the table holds only pointers to static, immutable data and functions.
unsafe impl Sync for PluginTableV1 {}

type Handle = Box<dyn IdentityProvider>;

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// Reads `len` bytes at `ptr` (the host's memory, valid for the call).
///
/// # Safety
/// `ptr` must be valid for `len` bytes, or null with `len == 0`.
unsafe fn input<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller guarantees `ptr` is valid for `len` bytes.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// Writes `bytes` to `out` if it is not null.
///
/// # Safety
/// `out` must be null or valid for a write.
unsafe fn answer(out: *mut PluginBuffer, bytes: Vec<u8>) {
    if !out.is_null() {
        // SAFETY: the caller guarantees `out` is valid for a write.
        unsafe { out.write(PluginBuffer::from_vec(bytes)) };
    }
}

/// The plugin side of `new`, for [`export_provider!`](crate::export_provider).
///
/// # Safety
/// Pointers as documented on [`PluginTableV1::new`].
pub unsafe fn plugin_new(
    factory: Factory,
    settings: *const u8,
    settings_len: usize,
    out: *mut PluginBuffer,
    status: *mut u32,
) -> *mut c_void {
    // SAFETY: forwarded from the host's call.
    let settings = unsafe { input(settings, settings_len) };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let request: NewRequest = serde_json::from_slice(settings).map_err(|err| {
            vec![ConfigError::new(
                "(settings)",
                format!("unreadable settings: {err}"),
            )]
        })?;
        factory(&ProviderSettings {
            name: request.name,
            settings: request.settings,
        })
    }));
    let (code, handle, bytes) = match result {
        Ok(Ok(provider)) => {
            let handle: Box<Handle> = Box::new(provider);
            (
                STATUS_OK,
                Box::into_raw(handle).cast::<c_void>(),
                Vec::new(),
            )
        }
        Ok(Err(errors)) => (
            STATUS_ERROR,
            std::ptr::null_mut(),
            serde_json::to_vec(&errors).unwrap_or_default(),
        ),
        Err(payload) => (
            STATUS_PANIC,
            std::ptr::null_mut(),
            panic_message(payload).into_bytes(),
        ),
    };
    // SAFETY: forwarded from the host's call.
    unsafe {
        answer(out, bytes);
        if !status.is_null() {
            status.write(code);
        }
    }
    handle
}

/// What the host sends to `new`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct NewRequest {
    /// The IdP entry's name.
    pub name: String,
    /// The kind-specific settings (`path` and the core's keys removed).
    pub settings: TomlTable,
}

/// The plugin side of `call`.
///
/// # Safety
/// Pointers as documented on [`PluginTableV1::call`]; `handle` must come from `new`.
pub unsafe extern "C" fn plugin_call(
    handle: *mut c_void,
    op: u32,
    input_ptr: *const u8,
    input_len: usize,
    out: *mut PluginBuffer,
) -> u32 {
    if handle.is_null() {
        // SAFETY: forwarded from the host's call.
        unsafe { answer(out, b"null handle".to_vec()) };
        return STATUS_ERROR;
    }
    // SAFETY: `handle` came from `plugin_new` and is not dropped while the host uses it.
    let provider: &Handle = unsafe { &*handle.cast::<Handle>() };
    // SAFETY: forwarded from the host's call.
    let request = unsafe { input(input_ptr, input_len) };
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<u8>, String> {
        match op {
            OP_DESCRIBE => serde_json::to_vec(&provider.describe()).map_err(|err| err.to_string()),
            OP_AUTHORIZE_PARAMS => {
                let ctx: LoginContext =
                    serde_json::from_slice(request).map_err(|err| err.to_string())?;
                serde_json::to_vec(&provider.authorize_params(&ctx)).map_err(|err| err.to_string())
            }
            OP_MAP_IDENTITY => {
                let claims: VerifiedClaims =
                    serde_json::from_slice(request).map_err(|err| err.to_string())?;
                let mapped: Result<MappedIdentity, MapError> = provider.map_identity(&claims);
                serde_json::to_vec(&mapped).map_err(|err| err.to_string())
            }
            other => Err(format!("unknown operation {other}")),
        }
    }));
    let (code, bytes) = match result {
        Ok(Ok(bytes)) => (STATUS_OK, bytes),
        Ok(Err(message)) => (STATUS_ERROR, message.into_bytes()),
        Err(payload) => (STATUS_PANIC, panic_message(payload).into_bytes()),
    };
    // SAFETY: forwarded from the host's call.
    unsafe { answer(out, bytes) };
    code
}

/// The plugin side of `free`.
///
/// # Safety
/// `buffer` must come from this plugin and not be freed twice.
pub unsafe extern "C" fn plugin_free(buffer: PluginBuffer) {
    if !buffer.ptr.is_null() {
        // SAFETY: the buffer was made by `PluginBuffer::from_vec` in this library.
        drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
    }
}

/// The plugin side of `drop`.
///
/// # Safety
/// `handle` must come from `new` and not be used afterwards.
pub unsafe extern "C" fn plugin_drop(handle: *mut c_void) {
    if !handle.is_null() {
        // SAFETY: `handle` came from `Box::into_raw` in `plugin_new`.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(unsafe { Box::from_raw(handle.cast::<Handle>()) })
        }));
    }
}

/// Exports a provider from a `cdylib` crate:
///
/// ```ignore
/// authnz_plugin::export_provider!("acme", factory);
/// ```
///
/// where `factory` is a [`Factory`]. It writes the `authnz_plugin_v1` symbol and its table.
#[macro_export]
macro_rules! export_provider {
    ($kind:expr, $factory:path) => {
        const _: () = {
            #[allow(unsafe_code)]
            unsafe extern "C" fn __authnz_new(
                settings: *const u8,
                settings_len: usize,
                out: *mut $crate::abi::PluginBuffer,
                status: *mut u32,
            ) -> *mut ::std::ffi::c_void {
                // SAFETY: forwarded unchanged from the host, which upholds the ABI contract.
                unsafe { $crate::abi::plugin_new($factory, settings, settings_len, out, status) }
            }

            static __AUTHNZ_TABLE: $crate::abi::PluginTableV1 = $crate::abi::PluginTableV1 {
                abi_version: $crate::abi::ABI_VERSION,
                struct_size: ::std::mem::size_of::<$crate::abi::PluginTableV1>() as u32,
                sdk_version: $crate::abi::SDK_VERSION_C.as_ptr().cast(),
                kind: ::std::concat!($kind, "\0").as_ptr().cast(),
                new: __authnz_new,
                call: $crate::abi::plugin_call,
                free: $crate::abi::plugin_free,
                drop: $crate::abi::plugin_drop,
            };

            /// The provider's entry point for authnz.
            #[allow(unsafe_code)]
            #[no_mangle]
            pub extern "C" fn authnz_plugin_v1() -> *const $crate::abi::PluginTableV1 {
                &__AUTHNZ_TABLE
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{standard_identity, ProviderInfo};
    use proptest::prelude::*;

    struct Plain;

    impl IdentityProvider for Plain {
        fn describe(&self) -> ProviderInfo {
            ProviderInfo::default()
        }

        fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
            Ok(standard_identity(claims))
        }
    }

    fn factory(_: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
        Ok(Box::new(Plain))
    }

    fn take(buffer: PluginBuffer) -> Vec<u8> {
        if buffer.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: the buffer came from this module and is freed once, right after the copy.
        let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec();
        // SAFETY: as above.
        unsafe { plugin_free(buffer) };
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_in_an_error_out_never_a_crash(input in proptest::collection::vec(any::<u8>(), 0..512), op in 0u32..6) {
            let mut out = PluginBuffer::empty();
            let mut status = 0;
            let settings = br#"{"name":"x","settings":{}}"#;
            // SAFETY: valid pointers for the call.
            let handle = unsafe { plugin_new(factory, settings.as_ptr(), settings.len(), &mut out, &mut status) };
            prop_assert!(!handle.is_null());
            let _ = take(out);
            let mut out = PluginBuffer::empty();
            // SAFETY: valid pointers; `handle` is alive.
            let status = unsafe { plugin_call(handle, op, input.as_ptr(), input.len(), &mut out) };
            let answer = take(out);
            prop_assert!(status == STATUS_OK || status == STATUS_ERROR, "status {status}");
            if status == STATUS_OK {
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&answer).is_ok());
            }
            // SAFETY: `handle` came from `plugin_new` and is dropped once.
            unsafe { plugin_drop(handle) };
        }

        #[test]
        fn arbitrary_settings_are_refused_cleanly(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut out = PluginBuffer::empty();
            let mut status = 0;
            // SAFETY: valid pointers for the call.
            let handle = unsafe { plugin_new(factory, input.as_ptr(), input.len(), &mut out, &mut status) };
            let answer = take(out);
            if handle.is_null() {
                prop_assert_eq!(status, STATUS_ERROR);
                prop_assert!(serde_json::from_slice::<Vec<ConfigError>>(&answer).is_ok());
            } else {
                // SAFETY: as above.
                unsafe { plugin_drop(handle) };
            }
        }
    }
}
