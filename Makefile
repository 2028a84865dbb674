# Everyday commands. `make run` and `make test` are the README's quick start.

DATABASE_URL ?= sqlite://simple-bank.db?mode=rwc
export DATABASE_URL

.PHONY: run test fuzz lint schema erd audit graphiql client bench cluster cluster-down migrateup migratedown migrateup1 migratedown1 migratestatus

## Serve the API on 127.0.0.1:8000 (SQLite by default; GraphiQL at /).
run:
	cargo run -p simple-bank

## Every test, on SQLite and on PostgreSQL (a throwaway server unless TEST_DATABASE_URL is set).
test:
	scripts/with-postgres cargo nextest run --workspace --no-fail-fast

## Generative testing beyond CI's run: N operations from seed SEED, on SQLite and PostgreSQL (the test in
## tests/integration/generative.rs; CI runs 10000 from seed 14 within `make test`), e.g. `make fuzz SEED=7 N=50000`.
SEED ?= 14
N ?= 10000
fuzz:
	FUZZ_SEED=$(SEED) FUZZ_OPERATIONS=$(N) scripts/with-postgres cargo nextest run -p tests --test integration \
		--no-fail-fast --success-output final generative::

## What CI checks besides the tests.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

## Regenerate schema.graphql from the server's schema.
schema:
	cargo run -q -p simple-bank -- export-schema > schema.graphql

## The benchmark: the release server beside the raw-SQL limit, on a stock PostgreSQL and on SQLite, and the subscription
## loads (under 5 minutes once built; BENCH_ONLY=transfer runs only the loads whose names contain it).
bench:
	cargo build -q --release -p simple-bank -p bank-bench
	PG_STOCK=1 scripts/with-postgres target/release/bank-bench

## The scale-out topology on this machine (README, Scaling): a PostgreSQL primary and a hot standby, pgbouncer, two
## servers and HAProxy in front, all on loopback; prints the URL. Needs postgresql, pgbouncer and haproxy installed.
cluster:
	scripts/cluster up

## Stops what `make cluster` started and removes its files.
cluster-down:
	scripts/cluster down

## Redraw docs/schema.md from a freshly migrated PostgreSQL database.
erd:
	scripts/with-postgres sh -c 'cargo run -q -p migration --bin erd -- "$$TEST_DATABASE_URL" > docs/schema.md'

## The GraphQL-over-HTTP spec's audit suite against a fresh server.
audit:
	scripts/audit-graphql-http

## GraphiQL's browser builds, so GraphiQL at / works offline.
graphiql:
	cd web/graphiql && npm ci && npm run build

## The TypeScript client: generate types, type-check, and run it against a fresh server.
client:
	cd examples/typescript-client && npm ci && npm run codegen && npx tsc --noEmit
	scripts/with-server "cd examples/typescript-client && npm run -s live"
	cd examples/typescript-client && npm run -s manifest
	TRUSTED_DOCUMENTS="$(CURDIR)/examples/typescript-client/persisted-documents.json" \
		scripts/with-server "cd examples/typescript-client && PERSISTED_DOCUMENTS=1 npm run -s live"

## The seed course's migration targets, on DATABASE_URL.
migrateup:        ## apply every pending migration
	cargo run -q -p migration -- up
migratedown:      ## roll back every applied migration
	cargo run -q -p migration -- reset
migrateup1:       ## apply the next migration
	cargo run -q -p migration -- up -n 1
migratedown1:     ## roll back the last migration
	cargo run -q -p migration -- down -n 1
migratestatus:
	cargo run -q -p migration -- status
