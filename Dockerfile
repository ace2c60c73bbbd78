# syntax=docker/dockerfile:1
# The LanceFleet image: the one `lancefleet` binary (every role: query-node, plan-executor,
# control-plane, indexer, standalone) on a slim Debian, run as a non-root user.
#
#   docker build -t lancefleet:dev .
#   docker run --rm -p 8080:8080 -p 10025:10025 lancefleet:dev       # standalone, data in /data
#
# The Helm chart (helm/lancefleet) runs `/usr/local/bin/lancefleet ROLE --config FILE` in it.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# protoc and the well-known .proto files (prost-build), cmake and a C toolchain (aws-lc-sys),
# mold (the linker .cargo/config.toml names), as scripts/lib.sh installs them on a workstation.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        protobuf-compiler libprotobuf-dev cmake mold build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds; the binary is
# copied out of the cached target in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin lancefleet \
    && install -D -m 0755 target/release/lancefleet /out/lancefleet

FROM debian:${DEBIAN_RELEASE}-slim
# CA certificates for HTTPS to S3, GCS and Azure; nothing else: the binary links only glibc.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 lancefleet \
    && useradd --system --uid 10001 --gid lancefleet --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin lancefleet \
    && install -d -o 10001 -g 10001 -m 0750 /data /var/cache/lancefleet
COPY --from=build /out/lancefleet /usr/local/bin/lancefleet
USER 10001:10001
WORKDIR /data
# REST API, Arrow Flight / Flight SQL, executor gRPC, executor metrics, control plane, indexer metrics.
EXPOSE 8080 10025 7070 9464 8070 8090
ENTRYPOINT ["/usr/local/bin/lancefleet"]
CMD ["standalone", "--data-dir", "/data", "--rest-listen", "0.0.0.0:8080", "--flight-listen", "0.0.0.0:10025"]
