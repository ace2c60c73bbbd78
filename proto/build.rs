//! Compiles the protobuf definitions under `proto/` with prost (needs `protoc`, Debian
//! package `protobuf-compiler`, on `PATH` or in `$PROTOC`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/lancefleet/v1/error.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    prost_build::Config::new().compile_protos(&protos, &["proto"])?;
    Ok(())
}
