#!/usr/bin/env bash
# `make demo`: the main job end to end, on the parts of the appliance that exist so far.
# An institution seals a synthetic SS-MIX2 record to the vault's key and pushes it to
# ingress (QUIC, mutual TLS 1.3, signed receipt); ingress checks the envelope without being
# able to open it; the one-way link carries it to the vault; the
# vault opens it; tampered and unregistered envelopes are refused; the vault anonymizes the
# synthetic patient table. Usage: demo.sh BIN_DIR
set -euo pipefail
bin=$(cd "${1:?usage: demo.sh BIN_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/enclave-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
step() { printf '\n== %s\n' "$*"; }

step "1. Keys: the vault's encryption key, the institution's signing key (plus an unregistered one)"
"$bin/enclave" keygen --kind encryption --owner vault --out vault
"$bin/enclave" keygen --kind signing --owner 1312345678 --out hospital
"$bin/enclave" keygen --kind signing --owner 9999999999 --out stranger >/dev/null
mkdir registered && cp hospital.pub registered/

step "2. Synthetic patients (no real data anywhere); institution 1312345678 seals one SS-MIX2 message to the vault (R-GW-8)"
"$bin/enclave" synth --persons 300 --institutions 3 --seed 1 --out synth
cp "$(find synth/ssmix2 -type f -path '*/ADT-00/*' | LC_ALL=C sort | head -n 1)" record.hl7
"$bin/enclave" seal --to vault.pub --sign-with hospital.key --type ssmix2 record.hl7 -o record.env
"$bin/enclave" inspect record.env --trust registered

step "3. Ingress checks the envelope header and signature; it holds no key that opens it"
"$bin/ingress" check-envelope record.env --trust registered

step "3b. The institution pushes it to ingress over QUIC with mutual TLS 1.3 and gets a signed receipt (R-GW-7, R-IN-3)"
"$bin/enclave" ca --dir ca init >/dev/null
"$bin/enclave" ca --dir ca issue --server localhost --out tls >/dev/null
"$bin/enclave" ca --dir ca issue --institution 1312345678 --out inst-tls
"$bin/enclave" keygen --kind signing --owner ingress --out ingress-receipts >/dev/null
mkdir -p to-send && cp record.hl7 to-send/
"$bin/ingress" serve --listen 127.0.0.1:0 --ca ca/ca.crt.pem --crl ca/crl.pem \
  --cert tls/localhost.crt.pem --key tls/localhost.key.pem --receipt-key ingress-receipts.key \
  --institutions registered --spool spool --outbox outbox --ledger ledger.db > ingress.out &
ingress_pid=$!
trap 'kill $ingress_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q listening ingress.out 2>/dev/null && break; sleep 0.1; done
cat ingress.out
addr=$(grep -o '127.0.0.1:[0-9]*' ingress.out)
"$bin/enclave" submit --ingress "$addr" --server-name localhost --ca ca/ca.crt.pem \
  --cert inst-tls/1312345678.crt.pem --key inst-tls/1312345678.key.pem --vault vault.pub \
  --sign-with hospital.key --ingress-key ingress-receipts.pub --type ssmix2 --state submit-state to-send
kill $ingress_pid; wait $ingress_pid 2>/dev/null || true
"$bin/ingress" ledger --ledger ledger.db | grep -o '"outcome":"accepted"'
accepted=$(ls outbox/incoming/1312345678_*.env)
echo "in the outbox towards the vault: $accepted"

step "4. The one-way link carries it from ingress to the vault (loopback here; UDP, nothing comes back)"
"$bin/diode" keygen --link ingress-vault --out link.key
mkdir -p inbox
"$bin/diode" recv --bind 127.0.0.1:47000 --inbox inbox --key-file link.key --events link-events.jsonl &
recv_pid=$!
trap 'kill $recv_pid 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 0.3
cp "$accepted" sent-copy.env
"$bin/diode" send --to 127.0.0.1:47000 --outbox outbox --key-file link.key --rate-mbit 100 --once
for _ in $(seq 50); do grep -q object_complete link-events.jsonl 2>/dev/null && break; sleep 0.1; done
kill $recv_pid; wait $recv_pid 2>/dev/null || true
grep object_complete link-events.jsonl
received=$(ls inbox/*-1312345678_*.env)
cmp sent-copy.env "$received"

step "5. The vault opens what arrived: signature, every segment and the SHA-256 verified"
"$bin/enclave" open --key vault.key --trust registered "$received" -o opened.hl7
cmp record.hl7 opened.hl7
echo "plaintext identical: $(sha256sum < opened.hl7 | cut -c1-16)…"

step "5b. Vault intake: checked, parsed, person linked by keyed pseudonym, stored encrypted (R-IN-1, R-IN-2, R-IN-5, R-OP-5)"
"$bin/vault" init --store store
"$bin/vault" intake run --once --inbox inbox --store store --key vault.key --institutions registered
"$bin/vault" intake status --store store
if grep -rqa "ISO IR87" store; then echo "demo: plaintext HL7 found in the store" >&2; exit 1; fi

step "5c. Operators: first administrator (one-time password and TOTP secret), audit chain verified, verified backup (R-OP-1..3, R-OP-8)"
"$bin/vault" admin bootstrap --store store --user admin --name "管理 太郎" > admin-first.json
echo "first administrator: admin (one-time credentials in admin-first.json, shown once)"
"$bin/vault" audit verify --store store
"$bin/vault" backup --store store --to backup

step "6. One flipped byte: refused (exit 3), nothing written under the output name"
cp record.env tampered.env
printf '\xff' | dd of=tampered.env bs=1 seek=300 conv=notrunc status=none
set +e; "$bin/enclave" open --key vault.key --trust registered tampered.env -o tampered.hl7; rc=$?; set -e
[ "$rc" = 3 ] && [ ! -e tampered.hl7 ] || { echo "demo: tampering was not refused" >&2; exit 1; }
echo "refused as expected (exit $rc)"

step "7. An envelope signed by an unregistered key: refused at ingress"
"$bin/enclave" seal --to vault.pub --sign-with stranger.key --type ssmix2 record.hl7 -o stranger.env 2>/dev/null
if "$bin/ingress" check-envelope stranger.env --trust registered; then
  echo "demo: unregistered sender was accepted" >&2; exit 1
fi
echo "refused as expected"

step "8. The vault anonymizes the synthetic patient table: optimal k = 5, l = 2 on the diagnosis, identifiers dropped (R-AN-1..4)"
flat=synth/flat/persons.csv
"$bin/enclave" hierarchy --input "$flat" --delimiter , --column age --interval 5,10,20 --out age.h.csv
"$bin/enclave" hierarchy --input "$flat" --delimiter , --column postal_code --mask 2,4,7 --out zip.h.csv
"$bin/enclave" hierarchy --input "$flat" --delimiter , --column prefecture --ordered 6,12,24 --order jis-prefectures --out pref.h.csv
printf 'M;*\nF;*\n' > sex.h.csv
"$bin/enclave" anonymize --input "$flat" --delimiter , \
  --qi sex=sex.h.csv --qi age=age.h.csv --qi postal_code=zip.h.csv --qi prefecture=pref.h.csv \
  --drop person_id,family_name,given_name,family_kana,given_kana,phone,insurer_number,insured_symbol,insured_number,city,birth_date \
  --sensitive primary_icd10 --l 2 --k 5 --suppression-limit 0.05 \
  --output released.csv --report released.json
if grep -q "$(sed -n 2p "$flat" | cut -d, -f2)" released.csv; then
  echo "demo: a family name reached the released table" >&2; exit 1
fi
echo "released table: $(($(wc -l < released.csv) - 1)) rows, no names, phone or insurance numbers"

printf '\ndemo: OK — sealed, pushed to ingress over mutual TLS with a signed receipt, carried over the one-way link, opened, checked, linked and stored encrypted in the vault, tampering and strangers refused, a table anonymized.\n'
echo "demo: releases (two reviewers, egress, enclave receive) run in the five-host harness that follows as root (make e2e, docs/deploy.md) and in crates/vault/tests/release.rs (docs/releases.md)."
