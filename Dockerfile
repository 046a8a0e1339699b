# syntax=docker/dockerfile:1
#
# Sightline as one small image: `docker build -t sightline .`, or
# `docker compose up --build` with compose.yaml (PostgreSQL + Elasticsearch).

# --- build -------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer: a change to the sources alone does
# not rebuild them.
# The workspace's other members (bench, test support) are only stubs here:
# cargo needs their manifests, not their code.
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml ./bench/
COPY tests/support/Cargo.toml ./tests/support/
RUN mkdir -p src bench/src tests/support/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && touch src/lib.rs tests/support/src/lib.rs \
    && cargo build --release --locked --bin sightline \
    && rm -rf src

# Migrations, templates, static files and the common-password list are
# compiled into the binary.
COPY src ./src
COPY data ./data
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN touch src/main.rs src/lib.rs \
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
# The session cookie is `__Host-`, Secure (the binary's default too; browsers
# accept it on http://localhost). COOKIE_SECURE=false serves plain HTTP on
# another host.
ENV COOKIE_SECURE=true
EXPOSE 3000
# `serve` migrates the database and creates the indices before it listens.
CMD ["sightline", "serve"]
