//! Writes the Pop3Cluster CRD: `cargo run -p crds --bin crdgen > crds/pop3cluster.yaml`, or with
//! `--write` straight to that file.

fn main() {
    let yaml = crds::crd_yaml();
    if std::env::args().any(|a| a == "--write") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/pop3cluster.yaml");
        std::fs::write(path, yaml).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        eprintln!("wrote {path}");
    } else {
        print!("{yaml}");
    }
}
