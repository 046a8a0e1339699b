# syntax=docker/dockerfile:1
#
# Sightline as one small image: `docker build -t sightline .`, or
# `docker compose up --build` with compose.yaml (PostgreSQL + Elasticsearch).

# --- build -------------------------------------------------------------------
# Base images by tag: pin their digests where a registry is reachable (see
# docs/SECURITY.md, Supply chain); this project's build machines reach none.
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer: a change to the sources alone does
# not rebuild them.
# The workspace's other members (bench, test support) are only stubs here:
# cargo needs their manifests, not their code.
COPY Cargo.toml Cargo.lock ./
COPY crates/core/Cargo.toml ./crates/core/
COPY crates/web/Cargo.toml crates/web/askama.toml ./crates/web/
COPY bench/Cargo.toml ./bench/
COPY tests/support/Cargo.toml ./tests/support/
RUN mkdir -p src crates/core/src crates/web/src bench/src tests/support/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && touch src/lib.rs crates/core/src/lib.rs crates/web/src/lib.rs tests/support/src/lib.rs \
    && cargo build --release --locked --bin sightline \
    && rm -rf src crates/core/src crates/web/src

# Migrations, templates, static files and the common-password list are
# compiled into the binary.
COPY src ./src
COPY crates ./crates
COPY data ./data
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN touch src/main.rs src/lib.rs crates/core/src/lib.rs crates/web/src/lib.rs \
    && cargo build --release --locked --bin sightline

# --- run ---------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home sightline
COPY --from=builder /build/target/release/sightline /usr/local/bin/sightline

USER sightline
ENV BIND_ADDR=0.0.0.0:3000
# Beyond loopback, /metrics, /status and /status/stream answer 401 until
# OPS_TOKEN (at least 16 characters; Prometheus sends it as a bearer) or
# OPS_OPEN=true (a trusted network) is given at run time; /healthz and
# /readyz stay open.
# The session cookie is `__Host-`, Secure (the binary's default too; browsers
# accept it on http://localhost). COOKIE_SECURE=false serves plain HTTP on
# another host.
ENV COOKIE_SECURE=true
EXPOSE 3000
# `serve` migrates the database and creates the indices before it listens.
CMD ["sightline", "serve"]
