fn main() {
    std::process::exit(ossrelay::cli::main());
}
