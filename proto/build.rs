//! Compiles the protobuf definitions under `proto/` with prost and tonic (needs `protoc`,
//! Debian package `protobuf-compiler`, on `PATH` or in `$PROTOC`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/lancefleet/v1/error.proto", "proto/lancefleet/v1/executor.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .extern_path(".lancefleet.v1.FlightData", "::arrow_flight::FlightData")
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
