//! `procespy`: see the crate documentation of the library.

fn main() -> std::process::ExitCode {
    procespy::main()
}
