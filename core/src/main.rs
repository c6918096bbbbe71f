//! The `authnz` binary.

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// objects, which glibc's malloc spent 15% of the forward-auth check's time on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    authnz::cli::main()
}
