// `sqlx::migrate!` (db.rs) embeds the migrations when this crate compiles;
// without this line a new migration file would not rebuild it.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
