// `sqlx::migrate!` embeds the files of `migrations/` at build time; without
// this, adding a migration does not rebuild the crate (sqlx's documented
// build script for stable Rust).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
