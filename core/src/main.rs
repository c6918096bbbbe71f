//! The `authnz` binary.

fn main() -> std::process::ExitCode {
    authnz::cli::main()
}
