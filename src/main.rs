//! The `geoprov` binary: everything a user touches. See the library docs for the architecture.

fn main() -> std::process::ExitCode {
    geoprov::cli::main()
}
