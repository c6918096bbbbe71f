//! The authnz command line, built inside the test crate so its tests can run it.

fn main() -> std::process::ExitCode {
    authnz::cli::main()
}
