fn main() -> std::process::ExitCode {
    proxborg::cli::main()
}
